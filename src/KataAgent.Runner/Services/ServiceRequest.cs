using System.Globalization;
using System.Text.Json;

namespace KataAgent.Runner.Services;

/// <summary>
/// A `start-service` payload. Backend.AI's agent sends <c>{name, port, ports, protocol, options}</c>
/// and the runner finds the command itself; KataAgent's own extension adds <c>command</c> (string or
/// argv), <c>env</c> and <c>startTimeoutSeconds</c>, and is then started as given.
/// </summary>
internal sealed record ServiceRequest
{
    public required string Name { get; init; }
    public string Protocol { get; init; } = "tcp";

    /// <summary>All ports, the primary one (<c>port</c>, else the first of <c>ports</c>) first.</summary>
    public IReadOnlyList<int> Ports { get; init; } = [];

    /// <summary>options.arguments: argument name → values (none for a flag).</summary>
    public IReadOnlyList<KeyValuePair<string, IReadOnlyList<string>>> Arguments { get; init; } = [];

    /// <summary>options.envs.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Environment { get; init; } = [];

    /// <summary>The extension: the command as given (null for a Backend.AI request).</summary>
    public ExplicitCommand? Command { get; init; }

    public int? PrimaryPort => Ports.Count > 0 ? Ports[0] : null;

    /// <exception cref="InvalidDataException">the payload is not a usable request; the message says why.</exception>
    public static ServiceRequest Parse(string json)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(json);
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException("the payload must be a JSON object {name, port, ports, protocol, options}");
            }
            string name = Optional(root, "name") is { ValueKind: JsonValueKind.String } nameValue && nameValue.GetString() is { Length: > 0 } text
                ? text : throw new InvalidDataException("'name' must be a non-empty string");
            var ports = new List<int>();
            if (Optional(root, "ports") is { } portList)
            {
                if (portList.ValueKind != JsonValueKind.Array)
                {
                    throw new InvalidDataException("'ports' must be a list of port numbers");
                }
                ports.AddRange(portList.EnumerateArray().Select(port => Port(port, "ports")));
            }
            if (Optional(root, "port") is { } single)
            {
                int primary = Port(single, "port");
                ports.Remove(primary);
                ports.Insert(0, primary);
            }
            var request = new ServiceRequest
            {
                Name = name,
                Protocol = Optional(root, "protocol") is { ValueKind: JsonValueKind.String } protocol ? protocol.GetString()! : "tcp",
                Ports = ports.Distinct().ToList(),
            };
            if (Optional(root, "options") is { } options)
            {
                if (options.ValueKind != JsonValueKind.Object)
                {
                    throw new InvalidDataException("'options' must be an object {arguments?, envs?}");
                }
                request = request with
                {
                    Arguments = Optional(options, "arguments") is { } arguments ? ServiceDefinitionFile.ArgumentMap(arguments, "options.arguments") : [],
                    Environment = Optional(options, "envs") is { } envs ? ServiceDefinitionFile.StringMap(envs, "options.envs") : [],
                };
            }
            return Optional(root, "command") is { } command ? request with { Command = ExplicitCommand.Parse(root, command, request.Ports) } : request;
        }
        catch (JsonException exception)
        {
            throw new InvalidDataException($"the payload is not JSON: {exception.Message}", exception);
        }
    }

    private static int Port(JsonElement value, string field) =>
        value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int port) && port is > 0 and < 65536
            ? port : throw new InvalidDataException($"'{field}' must hold TCP port numbers, not {value.GetRawText()}");

    private static JsonElement? Optional(JsonElement root, string name) =>
        root.TryGetProperty(name, out JsonElement value) && value.ValueKind != JsonValueKind.Null ? value : null;
}

/// <summary>
/// KataAgent's extension of `start-service`: <c>command</c> (shell text for /bin/sh -c, or argv),
/// <c>env</c>, <c>startTimeoutSeconds</c> (default 30); "{port}" in the command and env values is the
/// first port. Started once every port accepts connections.
/// </summary>
internal sealed record ExplicitCommand(IReadOnlyList<string> Argv, IReadOnlyList<KeyValuePair<string, string>> Environment, TimeSpan StartTimeout)
{
    public static ExplicitCommand Parse(JsonElement root, JsonElement command, IReadOnlyList<int> ports)
    {
        string firstPort = ports.Count > 0 ? ports[0].ToString(CultureInfo.InvariantCulture) : "";
        string Expand(string text) => text.Replace("{port}", firstPort, StringComparison.Ordinal);
        List<string> argv = command.ValueKind switch
        {
            JsonValueKind.Array => command.EnumerateArray()
                .Select(part => part.ValueKind == JsonValueKind.String ? Expand(part.GetString()!) : throw new InvalidDataException("'command' must be a string or a list of strings"))
                .ToList(),
            JsonValueKind.String => ["/bin/sh", "-c", Expand(command.GetString()!)],
            _ => throw new InvalidDataException("'command' must be a string or a list of strings"),
        };
        if (argv.Count == 0 || argv[0].Length == 0)
        {
            throw new InvalidDataException("'command' is empty");
        }
        List<KeyValuePair<string, string>> environment = root.TryGetProperty("env", out JsonElement env) && env.ValueKind != JsonValueKind.Null
            ? ServiceDefinitionFile.StringMap(env, "env").Select(pair => new KeyValuePair<string, string>(pair.Key, Expand(pair.Value))).ToList()
            : [];
        int timeoutSeconds = root.TryGetProperty("startTimeoutSeconds", out JsonElement timeout) && timeout.ValueKind != JsonValueKind.Null
            ? timeout.ValueKind == JsonValueKind.Number && timeout.TryGetInt32(out int seconds) && seconds > 0
                ? seconds : throw new InvalidDataException("'startTimeoutSeconds' must be a positive integer")
            : 30;
        return new ExplicitCommand(argv, environment, TimeSpan.FromSeconds(timeoutSeconds));
    }
}
