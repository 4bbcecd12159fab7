using System.Text;
using System.Text.Json;

namespace KataAgent.Runner.Services;

/// <summary>
/// The prestart actions of a service definition (Backend.AI's names and argument shapes). Every string
/// argument is a Python format string over the service variables. What an action returns is stored
/// under its <c>ref</c>: write_tempfile the file's path, run_command <c>{"out", "err"}</c>, the
/// others None.
/// </summary>
internal sealed class PrestartActions(RunnerConfig config, Func<string> tempDirectory)
{
    private static readonly Dictionary<string, string[]> ArgumentNames = new(StringComparer.Ordinal)
    {
        ["write_file"] = ["filename", "body", "mode", "append"],
        ["write_tempfile"] = ["body", "mode"],
        ["run_command"] = ["command", "echo"],
        ["mkdir"] = ["path"],
        ["log"] = ["message", "debug"],
    };

    /// <summary>Checks an action's name and argument names, before anything runs.</summary>
    /// <exception cref="ServiceStartException">the action is unknown or has an unknown argument.</exception>
    public static void Check(PrestartAction action)
    {
        if (!ArgumentNames.TryGetValue(action.Action, out string[]? names))
        {
            throw new ServiceStartException($"invalid action: {action.Action} (known: {string.Join(", ", ArgumentNames.Keys)})");
        }
        if (action.Arguments.ValueKind == JsonValueKind.Object)
        {
            foreach (JsonProperty property in action.Arguments.EnumerateObject())
            {
                if (!names.Contains(property.Name, StringComparer.Ordinal))
                {
                    throw new ServiceStartException($"{action.Action}: unexpected argument '{property.Name}' (takes {string.Join(", ", names)})");
                }
            }
        }
    }

    /// <exception cref="ServiceStartException">the action is unknown, its arguments are wrong, or it failed.</exception>
    public async Task<object?> RunAsync(PrestartAction action, Dictionary<string, object?> variables, CancellationToken stopping)
    {
        Check(action);
        var arguments = new ActionArguments(action);
        return action.Action switch
        {
            "write_file" => await WriteFileAsync(arguments, variables, stopping),
            "write_tempfile" => await WriteTempFileAsync(arguments, variables, stopping),
            "run_command" => await RunCommandAsync(arguments, variables, stopping),
            "mkdir" => MakeDirectory(arguments, variables),
            "log" => WriteLog(arguments, variables),
            _ => throw new ServiceStartException($"invalid action: {action.Action}"),
        };
    }

    /// <summary>write_file {filename, body: [lines], mode?: "644", append?: false}: each line formatted and ended with a newline.</summary>
    private static async Task<object?> WriteFileAsync(ActionArguments arguments, Dictionary<string, object?> variables, CancellationToken stopping)
    {
        string fileName = TemplateFormatter.Format(arguments.RequiredString("filename"), variables);
        IReadOnlyList<string> body = arguments.Lines("body");
        UnixFileMode mode = arguments.Mode();
        bool append = arguments.OptionalBool("append");
        var text = new StringBuilder();
        foreach (string line in body)
        {
            text.Append(TemplateFormatter.Format(line, variables)).Append('\n');
        }
        try
        {
            if (append)
            {
                await File.AppendAllTextAsync(fileName, text.ToString(), stopping);
            }
            else
            {
                await File.WriteAllTextAsync(fileName, text.ToString(), stopping);
            }
            File.SetUnixFileMode(fileName, mode);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            throw new ServiceStartException($"write_file {fileName}: {exception.Message}");
        }
        return null;
    }

    /// <summary>write_tempfile {body: [lines], mode?: "644"} → the path of a new *.py file; lines are written as they are (no newline added).</summary>
    private async Task<object?> WriteTempFileAsync(ActionArguments arguments, Dictionary<string, object?> variables, CancellationToken stopping)
    {
        IReadOnlyList<string> body = arguments.Lines("body");
        UnixFileMode mode = arguments.Mode();
        string text = string.Concat(body.Select(line => TemplateFormatter.Format(line, variables)));
        string path = Path.Combine(tempDirectory(), $"tmp{Guid.NewGuid():N}"[..11] + ".py");
        try
        {
            await File.WriteAllTextAsync(path, text, stopping);
            File.SetUnixFileMode(path, mode);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            throw new ServiceStartException($"write_tempfile: {exception.Message}");
        }
        return path;
    }

    /// <summary>run_command {command: [argv], echo?: false} → {"out", "err"}; the exit code is not checked (as in Backend.AI).</summary>
    private async Task<object?> RunCommandAsync(ActionArguments arguments, Dictionary<string, object?> variables, CancellationToken stopping)
    {
        List<string> argv = arguments.Required("command") is { ValueKind: JsonValueKind.Array } command
            ? command.EnumerateArray().Select(piece => TemplateFormatter.Format(PythonText(piece), variables)).ToList()
            : throw new ServiceStartException("run_command: 'command' must be a list");
        bool echo = arguments.OptionalBool("echo");
        if (argv.Count == 0)
        {
            throw new ServiceStartException("run_command: 'command' is empty");
        }
        HelperCommand.Outcome outcome;
        try
        {
            outcome = await HelperCommand.RunAsync(argv, config.ChildEnvironment, config.WorkDir, timeout: null, stopping);
        }
        catch (IOException exception)
        {
            throw new ServiceStartException($"run_command: {exception.Message}");
        }
        if (echo)
        {
            await Console.Out.WriteAsync(outcome.Stdout);
            await Console.Out.FlushAsync(stopping);
            await Console.Error.WriteAsync(outcome.Stderr);
        }
        Log.Debug($"prestart run_command {argv[0]} exited with {outcome.ExitCode}");
        return new Dictionary<string, object?>(StringComparer.Ordinal) { ["out"] = outcome.Stdout, ["err"] = outcome.Stderr };
    }

    /// <summary>mkdir {path}: with parents, fine if it exists.</summary>
    private static object? MakeDirectory(ActionArguments arguments, Dictionary<string, object?> variables)
    {
        string path = TemplateFormatter.Format(arguments.RequiredString("path"), variables);
        try
        {
            Directory.CreateDirectory(path);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            throw new ServiceStartException($"mkdir {path}: {exception.Message}");
        }
        return null;
    }

    /// <summary>log {message, debug?: false}: to the runner log.</summary>
    private static object? WriteLog(ActionArguments arguments, Dictionary<string, object?> variables)
    {
        string message = TemplateFormatter.Format(arguments.RequiredString("message"), variables);
        if (arguments.OptionalBool("debug"))
        {
            Log.Debug(message);
        }
        else
        {
            Log.Info(message);
        }
        return null;
    }

    /// <summary>Python's str() of a JSON scalar (run_command accepts numbers in its argv).</summary>
    private static string PythonText(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString()!,
        JsonValueKind.True => "True",
        JsonValueKind.False => "False",
        JsonValueKind.Null => "None",
        JsonValueKind.Number => value.GetRawText(),
        _ => throw new ServiceStartException($"run_command: argument {value.GetRawText()} must be a string or a number"),
    };

    /// <summary>The keyword arguments of one action: every one must be known, the required ones present.</summary>
    private sealed class ActionArguments(PrestartAction action)
    {
        public JsonElement Required(string name) =>
            Get(name) ?? throw new ServiceStartException($"{action.Action}: missing argument '{name}'");

        public string RequiredString(string name) => Required(name) is { ValueKind: JsonValueKind.String } text
            ? text.GetString()! : throw new ServiceStartException($"{action.Action}: '{name}' must be a string");

        public bool OptionalBool(string name) => Get(name) switch
        {
            null => false,
            { ValueKind: JsonValueKind.True } => true,
            { ValueKind: JsonValueKind.False } => false,
            _ => throw new ServiceStartException($"{action.Action}: '{name}' must be true or false"),
        };

        /// <summary>A list of strings; a single string is taken as the whole body.</summary>
        public IReadOnlyList<string> Lines(string name) => Required(name) switch
        {
            { ValueKind: JsonValueKind.String } text => [text.GetString()!],
            { ValueKind: JsonValueKind.Array } list => list.EnumerateArray()
                .Select(line => line.ValueKind == JsonValueKind.String ? line.GetString()! : throw new ServiceStartException($"{action.Action}: '{name}' must be a list of strings"))
                .ToList(),
            _ => throw new ServiceStartException($"{action.Action}: '{name}' must be a list of strings"),
        };

        /// <summary>"mode": octal text such as "644" or "0o755" (default "644").</summary>
        public UnixFileMode Mode()
        {
            string text = Get("mode") switch
            {
                null => "644",
                { ValueKind: JsonValueKind.String } value => value.GetString()!,
                { ValueKind: JsonValueKind.Number } value => value.GetRawText(),
                _ => throw new ServiceStartException($"{action.Action}: 'mode' must be octal text such as \"644\""),
            };
            string digits = text.StartsWith("0o", StringComparison.OrdinalIgnoreCase) ? text[2..] : text;
            try
            {
                int mode = Convert.ToInt32(digits, 8);
                return mode is >= 0 and <= 0xfff ? (UnixFileMode)mode : throw new FormatException();
            }
            catch (Exception exception) when (exception is FormatException or ArgumentException or OverflowException)
            {
                throw new ServiceStartException($"{action.Action}: 'mode' {text} is not an octal file mode");
            }
        }

        private JsonElement? Get(string name)
        {
            return action.Arguments.ValueKind == JsonValueKind.Object && action.Arguments.TryGetProperty(name, out JsonElement value) ? value : null;
        }
    }
}

/// <summary>A service cannot be started; the message is the `error` of the failed service-result.</summary>
internal sealed class ServiceStartException(string message) : Exception(message);
