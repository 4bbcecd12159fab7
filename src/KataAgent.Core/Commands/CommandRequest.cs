using KataAgent.Runner.Protocol;

namespace KataAgent.Core.Commands;

/// <summary>A command to run in a session (see docs/COMMANDS.md). Exactly one of <see cref="Arguments"/> and <see cref="Shell"/>.</summary>
public sealed record CommandRequest
{
    /// <summary>Null: the agent makes one ("cmd-" and 12 hex digits).</summary>
    public string? Id { get; init; }
    public IReadOnlyList<string>? Arguments { get; init; }
    public string? Shell { get; init; }
    public IReadOnlyDictionary<string, string>? Environment { get; init; }
    public string? WorkingDirectory { get; init; }
    public TerminalSize? Terminal { get; init; }
    public bool Stdin { get; init; }
}

/// <summary>A command of a session, running or recently ended.</summary>
public sealed record SessionCommandInfo(string KernelId, string Id, int Pid, bool Terminal, string Command, DateTimeOffset StartedAt,
    CommandExit? Exit, long BufferedBytes);

/// <summary>No command of that id in the session (never started, or ended long enough ago to be forgotten).</summary>
public sealed class CommandNotFoundException(string kernelId, string commandId)
    : Exception($"session {kernelId} has no command '{commandId}' (kata-agent session cmd ls {kernelId} lists them)")
{
    public string KernelId { get; } = kernelId;
    public string CommandId { get; } = commandId;
}
