using KataAgent.Runner.Native;

namespace KataAgent.Runner.Processes;

/// <summary>What to start. The child gets its own session, so it and its descendants form one process group.</summary>
internal sealed class ProcessStartSpec
{
    /// <summary>A path, or a bare name looked up in PATH.</summary>
    public required string Executable { get; init; }

    /// <summary>argv, including argv[0].</summary>
    public required IReadOnlyList<string> Arguments { get; init; }

    public required IReadOnlyDictionary<string, string> Environment { get; init; }

    public string? WorkingDirectory { get; init; }

    /// <summary>Pipe for stdin; otherwise stdin is /dev/null.</summary>
    public bool RedirectStdin { get; init; }

    /// <summary>
    /// A pseudo-terminal's replica (e.g. /dev/pts/3): the child's stdin, stdout and stderr and its controlling terminal;
    /// no pipes are made (<see cref="ChildProcess.StdoutFd"/> and the others are -1).
    /// </summary>
    public string? TerminalPath { get; init; }

    /// <summary>Adds the driver's framed channel: the child reads fd 3 and writes fd 4.</summary>
    public bool WithControlChannel { get; init; }
}

/// <summary>A started child. Parent-side pipe ends are -1 when not requested; the owner closes them.</summary>
internal sealed class ChildProcess
{
    public required int Pid { get; init; }
    public required Task<int> Exited { get; init; }
    public int StdinFd { get; init; } = -1;
    public required int StdoutFd { get; init; }
    public required int StderrFd { get; init; }
    public int ControlWriteFd { get; init; } = -1;
    public int EventsReadFd { get; init; } = -1;

    public bool HasExited => Exited.IsCompleted;

    /// <summary>Signals the child's whole process group (it is a session leader).</summary>
    public void SignalGroup(int signal)
    {
        if (HasExited)
        {
            return;
        }
        if (Libc.kill(-Pid, signal) != 0)
        {
            // The group may be gone while the leader is not yet reaped; the leader itself is enough then.
            _ = Libc.kill(Pid, signal);
        }
    }

    /// <summary>SIGTERM to the group, SIGKILL after <paramref name="grace"/>; waits for the leader's exit.</summary>
    public async Task TerminateAsync(TimeSpan grace)
    {
        SignalGroup(Libc.SIGTERM);
        if (await Task.WhenAny(Exited, Task.Delay(grace)) != Exited)
        {
            SignalGroup(Libc.SIGKILL);
            await Exited;
        }
    }
}
