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

    public ValueTask DisposeAsync() => Runner.DisposeAsync();
}

/// <summary>A lifecycle change: what clients subscribe to.</summary>
public sealed record SessionEvent(string KernelId, string Kind, SessionState State, int? ExitCode, DateTimeOffset At, string? Detail = null);
