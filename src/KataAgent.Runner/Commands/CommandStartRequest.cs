using System.Text.Json;

namespace KataAgent.Runner.Commands;

/// <summary>A `cmd-start` payload, validated. Every problem is a <see cref="FormatException"/> naming it.</summary>
internal sealed class CommandStartRequest
{
    public const int MaxIdLength = 64;
    private const int MaxTerminalSide = 1000;

    public required string Id { get; init; }
    public required IReadOnlyList<string> Arguments { get; init; }
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();
    public string? WorkingDirectory { get; init; }
    public (ushort Columns, ushort Rows)? Terminal { get; init; }
    public bool Stdin { get; init; }

    /// <summary>Ids are short and plain: they travel as a line of text in front of output and stdin bytes.</summary>
    public static bool IsValidId(string id) =>
        id.Length is > 0 and <= MaxIdLength && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-');

    /// <summary>The id of a payload, for an error reply to a request that is otherwise bad ("" when there is none).</summary>
    public static string TryReadId(byte[] payload)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(payload);
            return document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("id", out JsonElement id)
                && id.ValueKind == JsonValueKind.String && IsValidId(id.GetString()!) ? id.GetString()! : "";
        }
        catch (JsonException)
        {
            return "";
        }
    }

    public static CommandStartRequest Parse(byte[] payload)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(payload);
        }
        catch (JsonException exception)
        {
            throw new FormatException($"cmd-start is not JSON: {exception.Message}");
        }
        using (document)
        {
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new FormatException("cmd-start must be a JSON object");
            }
            string id = root.TryGetProperty("id", out JsonElement idElement) && idElement.ValueKind == JsonValueKind.String ? idElement.GetString()! : "";
            if (!IsValidId(id))
            {
                throw new FormatException($"cmd-start needs an id of 1 to {MaxIdLength} letters, digits, '.', '_' or '-'");
            }
            List<string> arguments;
            bool hasArgv = root.TryGetProperty("argv", out JsonElement argv) && argv.ValueKind != JsonValueKind.Null;
            bool hasShell = root.TryGetProperty("shell", out JsonElement shell) && shell.ValueKind != JsonValueKind.Null;
            if (hasArgv == hasShell)
            {
                throw new FormatException("cmd-start needs exactly one of argv (a list of strings) and shell (a string)");
            }
            if (hasArgv)
            {
                if (argv.ValueKind != JsonValueKind.Array || argv.EnumerateArray().Any(item => item.ValueKind != JsonValueKind.String))
                {
                    throw new FormatException("cmd-start argv must be a list of strings");
                }
                arguments = argv.EnumerateArray().Select(item => item.GetString()!).ToList();
                if (arguments.Count == 0 || arguments[0].Length == 0)
                {
                    throw new FormatException("cmd-start argv is empty: it needs at least the program");
                }
            }
            else
            {
                if (shell.ValueKind != JsonValueKind.String || string.IsNullOrWhiteSpace(shell.GetString()))
                {
                    throw new FormatException("cmd-start shell must be a non-empty string");
                }
                arguments = ["/bin/sh", "-c", shell.GetString()!];
            }
            if (arguments.Any(argument => argument.Contains('\0', StringComparison.Ordinal)))
            {
                throw new FormatException("cmd-start argv must not contain NUL characters");
            }
            var environment = new Dictionary<string, string>(StringComparer.Ordinal);
            if (root.TryGetProperty("env", out JsonElement env) && env.ValueKind != JsonValueKind.Null)
            {
                if (env.ValueKind != JsonValueKind.Object)
                {
                    throw new FormatException("cmd-start env must be an object of strings");
                }
                foreach (JsonProperty variable in env.EnumerateObject())
                {
                    if (variable.Value.ValueKind != JsonValueKind.String || variable.Name.Length == 0
                        || variable.Name.Contains('=', StringComparison.Ordinal) || variable.Name.Contains('\0', StringComparison.Ordinal)
                        || variable.Value.GetString()!.Contains('\0', StringComparison.Ordinal))
                    {
                        throw new FormatException($"cmd-start env entry '{variable.Name}' is not a valid NAME=value string");
                    }
                    environment[variable.Name] = variable.Value.GetString()!;
                }
            }
            string? cwd = root.TryGetProperty("cwd", out JsonElement cwdElement) && cwdElement.ValueKind == JsonValueKind.String
                && cwdElement.GetString()!.Length > 0 ? cwdElement.GetString() : null;
            (ushort, ushort)? terminal = null;
            if (root.TryGetProperty("pty", out JsonElement pty) && pty.ValueKind != JsonValueKind.Null)
            {
                terminal = ReadSize(pty, "cmd-start pty");
            }
            bool stdin = root.TryGetProperty("stdin", out JsonElement stdinElement) && stdinElement.ValueKind == JsonValueKind.True;
            return new CommandStartRequest
            {
                Id = id, Arguments = arguments, Environment = environment, WorkingDirectory = cwd, Terminal = terminal, Stdin = stdin,
            };
        }
    }

    /// <summary>`{"cols": n, "rows": n}`, each 1..1000.</summary>
    public static (ushort Columns, ushort Rows) ReadSize(JsonElement element, string what)
    {
        if (element.ValueKind != JsonValueKind.Object
            || !element.TryGetProperty("cols", out JsonElement cols) || !cols.TryGetInt32(out int columns)
            || !element.TryGetProperty("rows", out JsonElement rowsElement) || !rowsElement.TryGetInt32(out int rows)
            || columns is < 1 or > MaxTerminalSide || rows is < 1 or > MaxTerminalSide)
        {
            throw new FormatException($"{what} needs cols and rows, each from 1 to {MaxTerminalSide}");
        }
        return ((ushort)columns, (ushort)rows);
    }
}
