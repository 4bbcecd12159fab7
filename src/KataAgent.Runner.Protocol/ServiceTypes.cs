using System.Text.Json;
using System.Text.Json.Serialization;

namespace KataAgent.Runner.Protocol;

/// <summary>
/// A `start-service` request, serialized as Backend.AI's agent sends it: <c>{name, port, ports, protocol, options}</c>
/// with <c>port</c> the first (primary) port and <c>options</c> <c>{arguments?, envs?}</c>; the runner resolves
/// the command from the name (its built-ins, the image's service definitions, the runtime's apps).
/// KataAgent's extensions follow and are sent only when given: <c>command</c> (an explicit argv, "{port}" replaced
/// by the first port), <c>env</c> and <c>startTimeoutSeconds</c>.
/// </summary>
[JsonConverter(typeof(ServiceDefinitionJsonConverter))]
public sealed record ServiceDefinition
{
    public required string Name { get; init; }

    /// <summary>Extension: the argv to run instead of resolving <see cref="Name"/>. Null: not sent.</summary>
    public IReadOnlyList<string>? Command { get; init; }

    public IReadOnlyList<int> Ports { get; init; } = [];

    /// <summary>tcp, http, preopen, vnc or rdp; "preopen" makes a Backend.AI runner answer started without starting anything.</summary>
    public string Protocol { get; init; } = "tcp";

    /// <summary>
    /// <c>options.arguments</c>: argument name → values, checked by the runner against the app's allowed_arguments.
    /// Sent as null for no values (a flag), a string for one, a list for several (the shapes Backend.AI reads).
    /// </summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>>? Arguments { get; init; }

    /// <summary><c>options.envs</c>: environment variables, checked by the runner against the app's allowed_envs.</summary>
    public IReadOnlyDictionary<string, string>? Envs { get; init; }

    /// <summary>Extension: environment for an explicit <see cref="Command"/>. Sent only when not empty.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();

    /// <summary>Extension: how long the runner waits for the port. Null: not sent (the runner's default, 30 s).</summary>
    public int? StartTimeoutSeconds { get; init; }

    public string ToJson() => JsonSerializer.Serialize(this);
}

/// <summary>One app of an `apps-result`: what the image defines, not what runs.</summary>
public sealed record ServiceApp
{
    public required string Name { get; init; }

    public string? UrlTemplate { get; init; }

    public IReadOnlyList<string>? AllowedArguments { get; init; }

    public IReadOnlyList<string>? AllowedEnvs { get; init; }
}

/// <summary>The `apps-result` answer to `get-apps`: <c>{status: "done", data: [{name, url_template?, allowed_arguments?, allowed_envs?}]}</c>.</summary>
public sealed record AppsResult
{
    public required string Status { get; init; }

    public required IReadOnlyList<ServiceApp> Apps { get; init; }

    /// <summary>The runner's error text when <see cref="Status"/> is not "done".</summary>
    public string? Error { get; init; }

    /// <summary>The answer as the runner sent it.</summary>
    public required string Json { get; init; }

    /// <summary>Reads an answer; anything not shaped like one is an <see cref="InvalidDataException"/> naming the problem.</summary>
    public static AppsResult Parse(byte[] payload)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(payload);
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException("the runner's apps-result is not a JSON object");
            }
            string status = root.TryGetProperty("status", out JsonElement s) && s.ValueKind == JsonValueKind.String ? s.GetString()! : "";
            var apps = new List<ServiceApp>();
            if (root.TryGetProperty("data", out JsonElement data) && data.ValueKind == JsonValueKind.Array)
            {
                foreach (JsonElement app in data.EnumerateArray())
                {
                    if (app.ValueKind != JsonValueKind.Object || !app.TryGetProperty("name", out JsonElement name) || name.ValueKind != JsonValueKind.String)
                    {
                        throw new InvalidDataException($"an app in the runner's apps-result has no name: {app.GetRawText()}");
                    }
                    apps.Add(new ServiceApp
                    {
                        Name = name.GetString()!,
                        UrlTemplate = app.TryGetProperty("url_template", out JsonElement url) && url.ValueKind == JsonValueKind.String ? url.GetString() : null,
                        AllowedArguments = Strings(app, "allowed_arguments"),
                        AllowedEnvs = Strings(app, "allowed_envs"),
                    });
                }
            }
            return new AppsResult
            {
                Status = status,
                Apps = apps,
                Error = root.TryGetProperty("error", out JsonElement e) && e.ValueKind != JsonValueKind.Null ? e.ToString() : null,
                Json = root.GetRawText(),
            };
        }
        catch (JsonException exception)
        {
            throw new InvalidDataException($"the runner's apps-result is not JSON: {exception.Message}", exception);
        }
    }

    private static List<string>? Strings(JsonElement app, string property) =>
        app.TryGetProperty(property, out JsonElement list) && list.ValueKind == JsonValueKind.Array
            ? list.EnumerateArray().Select(item => item.ToString()).ToList()
            : null;
}

internal sealed class ServiceDefinitionJsonConverter : JsonConverter<ServiceDefinition>
{
    public override ServiceDefinition Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        throw new NotSupportedException("a start-service request is only written");

    public override void Write(Utf8JsonWriter writer, ServiceDefinition value, JsonSerializerOptions options)
    {
        writer.WriteStartObject();
        writer.WriteString("name", value.Name);
        if (value.Ports.Count > 0)
        {
            writer.WriteNumber("port", value.Ports[0]);
        }
        else
        {
            writer.WriteNull("port");
        }
        writer.WriteStartArray("ports");
        foreach (int port in value.Ports)
        {
            writer.WriteNumberValue(port);
        }
        writer.WriteEndArray();
        writer.WriteString("protocol", value.Protocol);
        writer.WriteStartObject("options");
        if (value.Arguments is { } arguments)
        {
            writer.WriteStartObject("arguments");
            foreach ((string name, IReadOnlyList<string> values) in arguments)
            {
                writer.WritePropertyName(name);
                switch (values.Count)
                {
                    case 0:
                        writer.WriteNullValue();
                        break;
                    case 1:
                        writer.WriteStringValue(values[0]);
                        break;
                    default:
                        writer.WriteStartArray();
                        foreach (string item in values)
                        {
                            writer.WriteStringValue(item);
                        }
                        writer.WriteEndArray();
                        break;
                }
            }
            writer.WriteEndObject();
        }
        if (value.Envs is { } envs)
        {
            writer.WriteStartObject("envs");
            foreach ((string name, string text) in envs)
            {
                writer.WriteString(name, text);
            }
            writer.WriteEndObject();
        }
        writer.WriteEndObject();
        if (value.Command is { } command)
        {
            writer.WriteStartArray("command");
            foreach (string argument in command)
            {
                writer.WriteStringValue(argument);
            }
            writer.WriteEndArray();
        }
        if (value.Environment.Count > 0)
        {
            writer.WriteStartObject("env");
            foreach ((string name, string text) in value.Environment)
            {
                writer.WriteString(name, text);
            }
            writer.WriteEndObject();
        }
        if (value.StartTimeoutSeconds is int seconds)
        {
            writer.WriteNumber("startTimeoutSeconds", seconds);
        }
        writer.WriteEndObject();
    }
}

/// <summary>The `service-result` answer: started, running (already was) or failed with <see cref="Error"/>.</summary>
public sealed record ServiceResult(
    [property: JsonPropertyName("status")] string Status,
    [property: JsonPropertyName("error")] string? Error)
{
    public bool Succeeded => Status is "started" or "running";
}

/// <summary>A `complete` request: the code, the cursor position and/or the text of the current line before the cursor.</summary>
public sealed record CompletionRequest
{
    [JsonPropertyName("code")]
    public string Code { get; init; } = "";

    [JsonPropertyName("row")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? Row { get; init; }

    [JsonPropertyName("col")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? Column { get; init; }

    [JsonPropertyName("line")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Line { get; init; }

    [JsonPropertyName("post")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Post { get; init; }
}
