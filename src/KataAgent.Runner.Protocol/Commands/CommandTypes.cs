namespace KataAgent.Runner.Protocol;

/// <summary>What `cmd-start` runs. Exactly one of <see cref="Arguments"/> and <see cref="Shell"/>.</summary>
public sealed record CommandSpec
{
    /// <summary>1 to 64 letters, digits, '.', '_' or '-'; unique among the session's running commands.</summary>
    public required string Id { get; init; }

    /// <summary>argv: the program (looked up in the session's PATH) and its arguments.</summary>
    public IReadOnlyList<string>? Arguments { get; init; }

    /// <summary>Text for `/bin/sh -c`.</summary>
    public string? Shell { get; init; }

    /// <summary>Added to the session environment.</summary>
    public IReadOnlyDictionary<string, string>? Environment { get; init; }

    /// <summary>Relative to the session's work dir; null: the work dir.</summary>
    public string? WorkingDirectory { get; init; }

    /// <summary>Run on a pseudo-terminal of this size (stdout and stderr are merged into stream "pty").</summary>
    public TerminalSize? Terminal { get; init; }

    /// <summary>Give the command a stdin pipe (a terminal always has input).</summary>
    public bool Stdin { get; init; }
}

public readonly record struct TerminalSize(int Columns, int Rows);

public abstract record CommandEvent;

/// <summary>
/// Output bytes. <see cref="Stream"/> is "stdout", "stderr" or "pty". <see cref="DroppedBefore"/>: bytes of this
/// command's output dropped (oldest first) just before this chunk because nobody read them in time.
/// </summary>
public sealed record CommandOutput(string Stream, byte[] Data, long DroppedBefore = 0) : CommandEvent;

/// <summary>
/// The end of a command: its exit code, or the signal that killed it, or neither when the runner went away
/// (<see cref="Error"/> says so).
/// </summary>
public sealed record CommandExit(int? ExitCode, int? Signal, string? Error = null) : CommandEvent
{
    /// <summary>As a shell reports it: the code, 128 + signal, or -1 when unknown.</summary>
    public int ShellExitCode => ExitCode ?? (Signal is int signal ? 128 + signal : -1);
}

/// <summary>The runner refused `cmd-start` (the message names the problem).</summary>
public sealed class CommandRejectedException(string message) : Exception(message);

/// <summary>A command the runner reports running (`cmd-list`).</summary>
public sealed record RunnerCommandInfo(string Id, int Pid, bool Terminal);

/// <summary>
/// Signal names and numbers (Linux x86_64/arm64 numbering) accepted for commands: "TERM", "SIGTERM", "15".
/// </summary>
public static class CommandSignals
{
    private static readonly Dictionary<string, int> Numbers = new(StringComparer.OrdinalIgnoreCase)
    {
        ["HUP"] = 1, ["INT"] = 2, ["QUIT"] = 3, ["ABRT"] = 6, ["KILL"] = 9, ["USR1"] = 10, ["SEGV"] = 11, ["USR2"] = 12,
        ["PIPE"] = 13, ["ALRM"] = 14, ["TERM"] = 15, ["CONT"] = 18, ["STOP"] = 19, ["TSTP"] = 20, ["WINCH"] = 28,
    };

    /// <summary>The number of a signal name or number; <see cref="ArgumentException"/> naming the problem otherwise.</summary>
    public static int Parse(string signal)
    {
        ArgumentNullException.ThrowIfNull(signal);
        string name = signal.Trim();
        if (int.TryParse(name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int number))
        {
            return number is >= 1 and <= 64 ? number
                : throw new ArgumentException($"signal number {number} is out of range (1 to 64)", nameof(signal));
        }
        if (name.StartsWith("SIG", StringComparison.OrdinalIgnoreCase))
        {
            name = name[3..];
        }
        return Numbers.TryGetValue(name, out number) ? number
            : throw new ArgumentException($"unknown signal '{signal}' (use a number or one of {string.Join(", ", Numbers.Keys)})", nameof(signal));
    }
}

/// <summary>The first event of a command run through the agent: its id (for input, signals, a later wait) and pid.</summary>
public sealed record CommandStarted(string Id, int Pid) : CommandEvent;
