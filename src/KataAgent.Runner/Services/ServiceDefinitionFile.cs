using System.Text.Json;

namespace KataAgent.Runner.Services;

/// <summary>One prestart action of a service definition: <c>{"action", "args": {...}, "ref"?}</c>.</summary>
internal sealed record PrestartAction(string Action, JsonElement Arguments, string? Ref);

/// <summary>
/// A Backend.AI service definition, <c>&lt;serviceDefsDir&gt;/&lt;name&gt;.json</c> (the image's
/// <c>/etc/backend.ai/service-defs</c>). The fields are Backend.AI's; see the runner README.
/// </summary>
internal sealed record ServiceDefinitionFile
{
    private static readonly HashSet<string> KnownFields = new(StringComparer.Ordinal)
    {
        "command", "shell", "noop", "url_template", "prestart_actions", "prestart", "env",
        "allowed_envs", "allowed_arguments", "default_arguments",
    };

    public required string Name { get; init; }
    public required string Path { get; init; }

    /// <summary>argv, before the default arguments and before interpolation. A string command is <c>[shell, "-c", command]</c>.</summary>
    public required IReadOnlyList<string> Command { get; init; }
    public bool Noop { get; init; }
    public string UrlTemplate { get; init; } = "";
    public IReadOnlyList<PrestartAction> PrestartActions { get; init; } = [];
    public IReadOnlyList<KeyValuePair<string, string>> Environment { get; init; } = [];
    public IReadOnlyList<string> AllowedEnvironment { get; init; } = [];
    public IReadOnlyList<string> AllowedArguments { get; init; } = [];

    /// <summary>Argument name → null (a flag), a value, or several values; appended after the command in order.</summary>
    public IReadOnlyList<KeyValuePair<string, IReadOnlyList<string>>> DefaultArguments { get; init; } = [];

    /// <summary>Reads and checks one definition file.</summary>
    /// <exception cref="InvalidDataException">the file is unreadable or malformed; the message names the file and the problem.</exception>
    public static ServiceDefinitionFile Load(string path)
    {
        string fileName = System.IO.Path.GetFileName(path);
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"could not read the service-def file {fileName}: {exception.Message}", exception);
        }
        try
        {
            using JsonDocument document = JsonDocument.Parse(text, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Disallow });
            return Parse(System.IO.Path.GetFileNameWithoutExtension(path), path, document.RootElement);
        }
        catch (JsonException exception)
        {
            throw new InvalidDataException($"malformed JSON in service-def file {fileName}: {exception.Message}", exception);
        }
        catch (InvalidDataException exception)
        {
            throw new InvalidDataException($"service-def file {fileName}: {exception.Message}", exception);
        }
    }

    private static ServiceDefinitionFile Parse(string name, string path, JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException("the top level must be a JSON object");
        }
        foreach (JsonProperty property in root.EnumerateObject())
        {
            if (!KnownFields.Contains(property.Name))
            {
                throw new InvalidDataException($"unknown field '{property.Name}' (known: {string.Join(", ", KnownFields.Order(StringComparer.Ordinal))})");
            }
        }
        bool noop = Optional(root, "noop") is { } noopValue
            && (noopValue.ValueKind is JsonValueKind.True or JsonValueKind.False ? noopValue.GetBoolean() : throw new InvalidDataException("'noop' must be true or false"));
        string shell = OptionalString(root, "shell") ?? "bash";
        IReadOnlyList<string> command = Optional(root, "command") switch
        {
            { ValueKind: JsonValueKind.String } script => [shell, "-c", script.GetString()!],
            { ValueKind: JsonValueKind.Array } list => StringList(list, "command"),
            null when noop => [],
            null => throw new InvalidDataException("'command' is missing"),
            _ => throw new InvalidDataException("'command' must be a string (run with 'shell' -c) or a list of strings"),
        };
        if (command.Count == 0 && !noop)
        {
            throw new InvalidDataException("'command' is empty");
        }
        // Backend.AI renames "prestart" to "prestart_actions", so "prestart" wins when both are given.
        JsonElement? prestart = Optional(root, "prestart") ?? Optional(root, "prestart_actions");
        return new ServiceDefinitionFile
        {
            Name = name,
            Path = path,
            Command = command,
            Noop = noop,
            UrlTemplate = OptionalString(root, "url_template") ?? "",
            PrestartActions = prestart is { } actions ? ParseActions(actions) : [],
            Environment = Optional(root, "env") is { } env ? StringMap(env, "env") : [],
            AllowedEnvironment = Optional(root, "allowed_envs") is { } envs ? StringList(envs, "allowed_envs") : [],
            AllowedArguments = Optional(root, "allowed_arguments") is { } arguments ? StringList(arguments, "allowed_arguments") : [],
            DefaultArguments = Optional(root, "default_arguments") is { } defaults ? ArgumentMap(defaults, "default_arguments") : [],
        };
    }

    private static List<PrestartAction> ParseActions(JsonElement actions)
    {
        if (actions.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidDataException("'prestart_actions' must be a list of {action, args, ref?} objects");
        }
        var parsed = new List<PrestartAction>();
        int index = 0;
        foreach (JsonElement action in actions.EnumerateArray())
        {
            string where = $"prestart action #{index++}";
            if (action.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"{where} must be an object {{action, args, ref?}}");
            }
            string kind = OptionalString(action, "action") ?? throw new InvalidDataException($"{where} has no 'action'");
            JsonElement arguments = Optional(action, "args") ?? default;
            if (arguments.ValueKind is not (JsonValueKind.Object or JsonValueKind.Undefined))
            {
                throw new InvalidDataException($"{where} ({kind}): 'args' must be an object");
            }
            parsed.Add(new PrestartAction(kind, arguments.ValueKind == JsonValueKind.Undefined ? default : arguments.Clone(), OptionalString(action, "ref")));
        }
        return parsed;
    }

    /// <summary>A JSON object of argument name → null, string or list of strings (options.arguments has the same shape).</summary>
    public static List<KeyValuePair<string, IReadOnlyList<string>>> ArgumentMap(JsonElement value, string field)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"'{field}' must be an object of argument name -> null, string or list of strings");
        }
        var arguments = new List<KeyValuePair<string, IReadOnlyList<string>>>();
        foreach (JsonProperty argument in value.EnumerateObject())
        {
            IReadOnlyList<string> values = argument.Value.ValueKind switch
            {
                JsonValueKind.Null => [],
                JsonValueKind.String => [argument.Value.GetString()!],
                JsonValueKind.Array => StringList(argument.Value, $"{field}.{argument.Name}"),
                _ => throw new InvalidDataException($"'{field}.{argument.Name}' must be null, a string or a list of strings"),
            };
            arguments.Add(new(argument.Name, values));
        }
        return arguments;
    }

    public static List<KeyValuePair<string, string>> StringMap(JsonElement value, string field)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"'{field}' must be an object of string values");
        }
        return value.EnumerateObject()
            .Select(entry => new KeyValuePair<string, string>(entry.Name, entry.Value.ValueKind == JsonValueKind.String
                ? entry.Value.GetString()! : throw new InvalidDataException($"'{field}.{entry.Name}' must be a string")))
            .ToList();
    }

    private static List<string> StringList(JsonElement value, string field)
    {
        if (value.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidDataException($"'{field}' must be a list of strings");
        }
        return value.EnumerateArray()
            .Select((item, index) => item.ValueKind == JsonValueKind.String ? item.GetString()! : throw new InvalidDataException($"'{field}[{index}]' must be a string"))
            .ToList();
    }

    private static JsonElement? Optional(JsonElement root, string name) =>
        root.TryGetProperty(name, out JsonElement value) && value.ValueKind != JsonValueKind.Null ? value : null;

    private static string? OptionalString(JsonElement root, string name) => Optional(root, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.String } text => text.GetString(),
        _ => throw new InvalidDataException($"'{name}' must be a string"),
    };
}
