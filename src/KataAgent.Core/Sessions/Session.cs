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

    /// <summary>How this agent created it: a claimed warm-pool member or a container made for it (recovered: cold).</summary>
    public CreatePath CreatePath { get; internal set; } = CreatePath.Cold;

    public SessionState State
    {
        get { lock (_gate) return _state; }
    }

    /// <summary>How long each create step took, in the order they ran (empty for a session recovered or restarted).</summary>
    public IReadOnlyList<CreateStepTiming> CreateSteps { get; internal set; } = [];

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
            // gVisor: the OOM killer's SIGKILL of the sandbox process itself reads as sandbox-died until the OOM event.
            if (_endReason is not { Kind: SessionEndKind.Signaled or SessionEndKind.SandboxDied, Signal: 9 } killed)
                return null;
            _endReason = SessionEndReason.OomKilled(Record.MemoryBytes, killed.At) with { ExitCode = killed.ExitCode, Signal = killed.Signal };
            return _endReason;
        }
    }

    // ---- Idle and lifetime bookkeeping (Agent.Timeouts.cs) ----
    private long _lastActivityTicks = DateTimeOffset.UtcNow.UtcTicks;
    private int _activeRuns;
    private long _lifetimeExtensionTicks;
    private long _idleFloorTicks;

    /// <summary>When the session last did something that counts against idleness (execute, file transfer, traffic).</summary>
    public DateTimeOffset LastActivity => new(Interlocked.Read(ref _lastActivityTicks), TimeSpan.Zero);

    /// <summary>Runs in progress (an execute stream that has not ended): the session is not idle while one is.</summary>
    public int ActiveRuns => Volatile.Read(ref _activeRuns);

    internal void Touch(DateTimeOffset at)
    {
        var ticks = at.UtcTicks;
        long seen;
        while ((seen = Interlocked.Read(ref _lastActivityTicks)) < ticks &&
               Interlocked.CompareExchange(ref _lastActivityTicks, ticks, seen) != seen)
        {
        }
    }

    internal void BeginRun()
    {
        Interlocked.Increment(ref _activeRuns);
        Touch(DateTimeOffset.UtcNow);
    }

    internal void EndRun()
    {
        Interlocked.Decrement(ref _activeRuns);
        Touch(DateTimeOffset.UtcNow);
    }

    /// <summary>What <c>session extend</c> added to the maximum lifetime so far.</summary>
    public TimeSpan LifetimeExtension => TimeSpan.FromTicks(Interlocked.Read(ref _lifetimeExtensionTicks));

    /// <summary>The idle timeout cannot fire before this (an extend pushes it); MinValue when never extended.</summary>
    public DateTimeOffset IdleFloor => new(Interlocked.Read(ref _idleFloorTicks), TimeSpan.Zero);

    internal void Extend(TimeSpan by, DateTimeOffset newIdleFloor)
    {
        Interlocked.Add(ref _lifetimeExtensionTicks, by.Ticks);
        Interlocked.Exchange(ref _idleFloorTicks, newIdleFloor.UtcTicks);
    }

    /// <summary>The idle, lifetime and exec limits (set when the agent registers the session).</summary>
    public SessionTimeouts Timeouts { get; internal set; } = SessionTimeouts.None;

    /// <summary>When the idle timeout ends the session if nothing happens before; null: no idle timeout.</summary>
    public DateTimeOffset? IdleDeadline => Timeouts.Idle > TimeSpan.Zero
        ? Max(LastActivity + Timeouts.Idle, IdleFloor)
        : null;

    /// <summary>When the maximum lifetime (plus extensions) ends the session; null: unlimited.</summary>
    public DateTimeOffset? LifetimeDeadline => Timeouts.MaxLifetime > TimeSpan.Zero
        ? Record.CreatedAt + Timeouts.MaxLifetime + LifetimeExtension
        : null;

    private static DateTimeOffset Max(DateTimeOffset a, DateTimeOffset b) => a >= b ? a : b;

    /// <summary>Which deadline (idle or lifetime, at which instant) a warning was last published for: one warning per deadline.</summary>
    internal DateTimeOffset? IdleWarnedFor { get; set; }
    internal DateTimeOffset? LifetimeWarnedFor { get; set; }

    /// <summary>The shim the task lives in, found when the session was registered.</summary>
    internal IReadOnlyList<Diagnostics.SandboxProcess> SandboxProcesses { get; set; } = [];

    // Cancelled when the agent ends the session (destroy, timeouts): runs that wait on it stop waiting. Not disposed:
    // a run may still link to it after the session is gone, and it holds no unmanaged resource without a timer.
#pragma warning disable CA2213
    private readonly CancellationTokenSource _ending = new();
#pragma warning restore CA2213

    internal CancellationToken EndingToken => _ending.Token;

    internal void SignalEnding() => _ending.Cancel();

    internal SessionTombstone ToTombstone(SessionEndReason fallback) => new(Record, EndReason ?? fallback, ExitCode, OutOfMemory);

    public ValueTask DisposeAsync() => Runner.DisposeAsync();
}

/// <summary>A lifecycle change: what clients subscribe to.</summary>
/// <remarks><paramref name="EndReason"/> is set on the events that report the session's end (exited, oom once it refines one, destroyed).</remarks>
public sealed record SessionEvent(string KernelId, string Kind, SessionState State, int? ExitCode, DateTimeOffset At, string? Detail = null,
    SessionEndReason? EndReason = null);
