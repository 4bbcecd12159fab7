using System.Globalization;
using System.Text;
using System.Text.Json;

namespace KataAgent.Core.Sessions;

/// <summary>The smallest session an image accepts (<c>ai.backend.resource.min.cpu</c> / <c>.mem</c>); null: no minimum.</summary>
public sealed record ResourceMinimums(double? Cpus, long? MemoryBytes);

/// <summary>
/// The image labels that steer a session, as Backend.AI reads them (runtime type and path, features, core-count
/// variables, resource minimums), plus the project's own <c>io.kata-agent.runner-command</c>.
/// Every parse error is a <see cref="FormatException"/> naming the label.
/// </summary>
public static class ImageLabels
{
    public const string RuntimeType = "ai.backend.runtime-type";
    public const string RuntimePath = "ai.backend.runtime-path";
    public const string Features = "ai.backend.features";
    public const string EnvsCoreCount = "ai.backend.envs.corecount";
    public const string ResourceMinPrefix = "ai.backend.resource.min.";
    public const string MinCpu = ResourceMinPrefix + "cpu";
    public const string MinMemory = ResourceMinPrefix + "mem";

    /// <summary>The image's own kernel runner: a JSON array of strings, or a command line split like a shell's words.</summary>
    public const string RunnerCommand = "io.kata-agent.runner-command";

    /// <summary>
    /// <c>ai.backend.features</c>: space-separated (query, batch, user-input, uid-match, tty, ...). Backend.AI's
    /// default when the label is absent is <c>uid-match</c> alone; here an absent label is null ("not declared").
    /// </summary>
    public static IReadOnlyList<string>? ParseFeatures(IReadOnlyDictionary<string, string> labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        return labels.TryGetValue(Features, out var value)
            ? value.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Distinct(StringComparer.Ordinal).ToList()
            : null;
    }

    /// <summary>
    /// The variables <c>ai.backend.envs.corecount</c> names (comma-separated), each set to the session's core count
    /// unless the request sets it, as Backend.AI's agent does (it counts the allocated cores; here: the CPU share
    /// rounded up, at least 1).
    /// </summary>
    public static Dictionary<string, string> Environment(IReadOnlyDictionary<string, string> requested,
        IReadOnlyDictionary<string, string> labels, double cpus)
    {
        ArgumentNullException.ThrowIfNull(requested);
        ArgumentNullException.ThrowIfNull(labels);
        var environ = new Dictionary<string, string>(requested, StringComparer.Ordinal);
        var cores = Math.Max(1, (int)Math.Ceiling(cpus)).ToString(CultureInfo.InvariantCulture);
        foreach (var name in (labels.GetValueOrDefault(EnvsCoreCount) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            environ.TryAdd(name, cores);
        return environ;
    }

    /// <summary>
    /// <c>ai.backend.resource.min.cpu</c> (a decimal core count) and <c>.mem</c> (bytes, or Backend.AI's binary sizes:
    /// "1g", "256m", "512MiB", "1.5g"). Other keys (<c>cuda.device</c>, <c>cuda.shares</c>, ...) name accelerators this
    /// agent does not have and are ignored.
    /// </summary>
    public static ResourceMinimums ParseMinimums(IReadOnlyDictionary<string, string> labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        double? cpus = null;
        long? memory = null;
        if (labels.TryGetValue(MinCpu, out var cpuText))
        {
            if (!double.TryParse(cpuText.Trim(), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var value) || double.IsNaN(value) || double.IsInfinity(value))
                throw new FormatException($"{MinCpu}: '{cpuText}' is not a number of cores");
            cpus = value;
        }
        if (labels.TryGetValue(MinMemory, out var memText))
            memory = ParseBinarySize(memText) ?? throw new FormatException($"{MinMemory}: '{memText}' is not a size (bytes, or a number with k, m, g, t: \"256m\", \"1g\")");
        return new ResourceMinimums(cpus, memory);
    }

    private static readonly string[] SizeEndings = ["ibytes", "ibyte", "ib", "bytes", "byte", "b"];

    /// <summary>Backend.AI's BinarySize: an integer is bytes; else a decimal with a k/m/g/t/p/e suffix (powers of 1024), optionally followed by "b", "ib", "bytes".</summary>
    public static long? ParseBinarySize(string? text)
    {
        if (text is null)
            return null;
        var expr = text.Trim().Replace("_", "", StringComparison.Ordinal).ToLowerInvariant();
        if (long.TryParse(expr, NumberStyles.None, CultureInfo.InvariantCulture, out var bytes))
            return bytes;
        foreach (var ending in SizeEndings)
        {
            if (expr.EndsWith(ending, StringComparison.Ordinal) && expr.Length > ending.Length)
            {
                expr = expr[..^ending.Length];
                break;
            }
        }
        if (long.TryParse(expr, NumberStyles.None, CultureInfo.InvariantCulture, out bytes))
            return bytes; // "512b", "512 bytes"
        if (expr.Length < 2)
            return null;
        var multiplier = expr[^1] switch
        {
            'k' => 1L << 10,
            'm' => 1L << 20,
            'g' => 1L << 30,
            't' => 1L << 40,
            'p' => 1L << 50,
            'e' => 1L << 60,
            _ => 0L,
        };
        if (multiplier == 0 || !decimal.TryParse(expr[..^1].Trim(), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number))
            return null;
        try
        {
            return (long)(number * multiplier);
        }
        catch (OverflowException)
        {
            return null;
        }
    }

    /// <summary>
    /// <c>io.kata-agent.runner-command</c>: null when absent; a JSON array of strings when it starts with '[', else a
    /// command line split into words (whitespace separates; single and double quotes group; backslash escapes).
    /// </summary>
    public static IReadOnlyList<string>? ParseRunnerCommand(IReadOnlyDictionary<string, string> labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        if (!labels.TryGetValue(RunnerCommand, out var value))
            return null;
        IReadOnlyList<string> command;
        if (value.TrimStart().StartsWith('['))
        {
            try
            {
                command = JsonSerializer.Deserialize<List<string>>(value) ?? [];
            }
            catch (JsonException e)
            {
                throw new FormatException($"{RunnerCommand}: not a JSON array of strings: {e.Message}", e);
            }
        }
        else
        {
            try
            {
                command = SplitCommandLine(value);
            }
            catch (FormatException e)
            {
                throw new FormatException($"{RunnerCommand}: {e.Message}", e);
            }
        }
        var problem = CheckCommand(command);
        return problem is null ? command : throw new FormatException($"{RunnerCommand}: {problem}");
    }

    /// <summary>What is wrong with a runner command, or null: it needs a program, and no argument may hold a NUL.</summary>
    public static string? CheckCommand(IReadOnlyList<string> command)
    {
        ArgumentNullException.ThrowIfNull(command);
        if (command.Count == 0 || string.IsNullOrWhiteSpace(command[0]))
            return "the runner command is empty (it needs at least the program)";
        for (var i = 0; i < command.Count; i++)
        {
            if (command[i] is null || command[i].Contains('\0', StringComparison.Ordinal))
                return $"argument {i} of the runner command contains a NUL";
        }
        return null;
    }

    /// <summary>Splits a command line into words: whitespace separates; single and double quotes group; backslash escapes.</summary>
    public static IReadOnlyList<string> SplitCommandLine(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var words = new List<string>();
        var word = new StringBuilder();
        var inWord = false;
        char? quote = null;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (quote is { } q)
            {
                if (c == q)
                    quote = null;
                else if (c == '\\' && q == '"' && i + 1 < text.Length && text[i + 1] is '"' or '\\')
                    word.Append(text[++i]);
                else
                    word.Append(c);
            }
            else if (char.IsWhiteSpace(c))
            {
                if (inWord)
                    words.Add(word.ToString());
                word.Clear();
                inWord = false;
            }
            else
            {
                inWord = true;
                if (c is '"' or '\'')
                    quote = c;
                else if (c == '\\' && i + 1 < text.Length)
                    word.Append(text[++i]);
                else
                    word.Append(c);
            }
        }
        if (quote is not null)
            throw new FormatException($"unterminated {quote} quote in '{text}'");
        if (inWord)
            words.Add(word.ToString());
        return words;
    }
}
