using KataAgent.Runner.Protocol;

namespace KataAgent.Core.Sessions;

/// <summary>A live session: its persisted record plus what only exists while the agent runs.</summary>
public sealed class Session(SessionRecord record, KernelRunnerClient runner) : IAsyncDisposable
{
    private readonly object _gate = new();
    private SessionState _state = SessionState.Running;

    public SessionRecord Record { get; internal set; } = record;
    public KernelRunnerClient Runner { get; internal set; } = runner;
    public string KernelId => Record.KernelId;

    public SessionState State
    {
        get { lock (_gate) return _state; }
    }

    public int? ExitCode { get; private set; }
    public bool OutOfMemory { get; private set; }

    /// <summary>Moves to a new state unless the session is already further along; returns whether it changed.</summary>
    internal bool TryTransition(SessionState next, int? exitCode = null)
    {
        lock (_gate)
        {
            if (next <= _state && !(next == SessionState.Running && _state == SessionState.Exited))
                return false;
            _state = next;
            if (exitCode is not null)
                ExitCode = exitCode;
            return true;
        }
    }

    internal void MarkOutOfMemory() => OutOfMemory = true;

    /// <summary>Serialises pause, resume and commit of this session (each freezes or thaws its task).</summary>
    internal SemaphoreSlim FreezeGate { get; } = new(1, 1);

    /// <summary>Running ⇄ Paused only; returns whether it changed (false for a session that is not running/paused).</summary>
    internal bool TrySetPaused(bool paused)
    {
        lock (_gate)
        {
            var (from, to) = paused ? (SessionState.Running, SessionState.Paused) : (SessionState.Paused, SessionState.Running);
            if (_state != from)
                return false;
            _state = to;
            return true;
        }
    }

    /// <summary>How the session ended; null while it has not. Set once (an OOM event after the exit may still refine it).</summary>
    public SessionEndReason? EndReason
    {
        get { lock (_gate) return _endReason; }
    }

    private SessionEndReason? _endReason;

    /// <summary>Records how the session ended unless that is already known; returns the reason it keeps.</summary>
    internal SessionEndReason SetEndReason(SessionEndReason reason)
    {
        lock (_gate)
            return _endReason ??= reason;
    }

    /// <summary>
    /// containerd may deliver the OOM event after the exit: a SIGKILL end seen before it becomes oom-killed.
    /// Returns the refined reason, or null when nothing changed.
    /// </summary>
    internal SessionEndReason? RefineAfterOutOfMemory()
    {
        lock (_gate)
        {
            if (_endReason is not { Kind: SessionEndKind.Signaled, Signal: 9 } killed)
                return null;
            _endReason = SessionEndReason.OomKilled(Record.MemoryBytes, killed.At) with { ExitCode = killed.ExitCode, Signal = killed.Signal };
            return _endReason;
        }
    }

    internal SessionTombstone ToTombstone(SessionEndReason fallback) => new(Record, EndReason ?? fallback, ExitCode, OutOfMemory);

    public ValueTask DisposeAsync() => Runner.DisposeAsync();
}

/// <summary>A lifecycle change: what clients subscribe to.</summary>
/// <remarks><paramref name="EndReason"/> is set on the events that report the session's end (exited, oom once it refines one, destroyed).</remarks>
public sealed record SessionEvent(string KernelId, string Kind, SessionState State, int? ExitCode, DateTimeOffset At, string? Detail = null,
    SessionEndReason? EndReason = null);
