using System.Globalization;

namespace KataAgent.Core.Sessions;

/// <summary>Why a session ended (docs/END-REASONS.md); its wire name is <see cref="SessionEndReason.Name"/>.</summary>
public enum SessionEndKind
{
    Exited,
    Signaled,
    OomKilled,
    SandboxDied,
    ExecTimeout,
    IdleTimeout,
    LifetimeExpired,
    Destroyed,
    AgentLost,
    CreateFailed,
}

/// <summary>Who destroyed a session that was still running.</summary>
public enum DestroyedBy
{
    Api,
    Manager,
    Reconcile,
}

/// <summary>
/// The typed end of a session, set once when it ends: what happened, when, and the detail that kind carries
/// (exit code, signal, memory limit, who destroyed it, the create step that failed).
/// </summary>
public sealed record SessionEndReason(SessionEndKind Kind, DateTimeOffset At)
{
    // containerd's shims (runc, gVisor, Kata) report a task killed by signal N as exit status 128 + N.
    private const int SignalOffset = 128;
    private const int MaxSignal = 64;
    private const int SigKill = 9;

    public int? ExitCode { get; init; }
    public int? Signal { get; init; }
    public long? MemoryLimitBytes { get; init; }
    public DestroyedBy? By { get; init; }
    /// <summary>create-failed: the step that failed; sandbox-died: which process died (e.g. "shim pid 123 gone").</summary>
    public string? Step { get; init; }

    /// <summary>The wire name: exited, signaled, oom-killed, sandbox-died, exec-timeout, idle-timeout, lifetime-expired, destroyed, agent-lost, create-failed.</summary>
    public string Name => KindName(Kind);

    public static string KindName(SessionEndKind kind) => kind switch
    {
        SessionEndKind.OomKilled => "oom-killed",
        SessionEndKind.SandboxDied => "sandbox-died",
        SessionEndKind.ExecTimeout => "exec-timeout",
        SessionEndKind.IdleTimeout => "idle-timeout",
        SessionEndKind.LifetimeExpired => "lifetime-expired",
        SessionEndKind.AgentLost => "agent-lost",
        SessionEndKind.CreateFailed => "create-failed",
        var k => k.ToString().ToLowerInvariant(),
    };

    /// <summary>
    /// From a task's exit status as containerd reports it. 128+N is read as signal N (a process that exits with
    /// such a code itself looks the same: the shims do not tell them apart). A SIGKILL after an OOM event in the
    /// session's cgroup is the OOM killer's.
    /// </summary>
    public static SessionEndReason FromExitStatus(int exitStatus, bool outOfMemory, long memoryLimitBytes, DateTimeOffset at)
    {
        if (exitStatus > SignalOffset && exitStatus <= SignalOffset + MaxSignal)
        {
            var signal = exitStatus - SignalOffset;
            if (signal == SigKill && outOfMemory)
                return OomKilled(memoryLimitBytes, at) with { ExitCode = exitStatus, Signal = signal };
            return new SessionEndReason(SessionEndKind.Signaled, at) { ExitCode = exitStatus, Signal = signal };
        }
        return new SessionEndReason(SessionEndKind.Exited, at) { ExitCode = exitStatus };
    }

    /// <summary>No exit status at all: containerd lost the task (its shim or sandbox went away), so sandbox-died.</summary>
    public static SessionEndReason FromExitStatus(int? exitStatus, bool outOfMemory, long memoryLimitBytes, DateTimeOffset at) =>
        exitStatus is int status ? FromExitStatus(status, outOfMemory, memoryLimitBytes, at) : new SessionEndReason(SessionEndKind.SandboxDied, at);

    /// <summary>The shim or sandbox process died (<paramref name="what"/>: which); the exit status is containerd's cleanup's.</summary>
    public static SessionEndReason SandboxDied(string what, int? exitStatus, DateTimeOffset at) =>
        new(SessionEndKind.SandboxDied, at) { ExitCode = exitStatus, Step = what };

    public static SessionEndReason OomKilled(long memoryLimitBytes, DateTimeOffset at) =>
        new(SessionEndKind.OomKilled, at) { MemoryLimitBytes = memoryLimitBytes };

    public static SessionEndReason Destroyed(DestroyedBy by, DateTimeOffset at) => new(SessionEndKind.Destroyed, at) { By = by };

    public static SessionEndReason AgentLost(int? exitStatus, DateTimeOffset at) => new(SessionEndKind.AgentLost, at) { ExitCode = exitStatus };

    public static SessionEndReason CreateFailed(string step, DateTimeOffset at) => new(SessionEndKind.CreateFailed, at) { Step = step };

    /// <summary>e.g. "oom-killed (limit 1 GiB)", "signaled (signal 9)", "destroyed (by api)".</summary>
    public string Describe()
    {
        var detail = Kind switch
        {
            SessionEndKind.Exited => ExitCode is int code ? $"code {code}" : null,
            SessionEndKind.Signaled => Signal is int signal ? $"signal {signal}" : null,
            SessionEndKind.OomKilled => MemoryLimitBytes is long limit ? $"limit {FormatBytes(limit)}" : null,
            SessionEndKind.Destroyed => By is { } by ? $"by {by.ToString().ToLowerInvariant()}" : null,
            SessionEndKind.AgentLost => ExitCode is int code ? $"exit status {code}" : null,
            SessionEndKind.CreateFailed => Step is { } step ? $"at step {step}" : null,
            SessionEndKind.SandboxDied => Step,
            _ => null,
        };
        return detail is null ? Name : $"{Name} ({detail})";
    }

    /// <summary>"ended 3 min ago: oom-killed (limit 1 GiB)".</summary>
    public string DescribeAgo(DateTimeOffset now) => $"ended {FormatAgo(now - At)}: {Describe()}";

    public static string FormatAgo(TimeSpan elapsed)
    {
        if (elapsed < TimeSpan.FromMinutes(1))
            return string.Create(CultureInfo.InvariantCulture, $"{Math.Max(0, (int)elapsed.TotalSeconds)} s ago");
        if (elapsed < TimeSpan.FromHours(1))
            return string.Create(CultureInfo.InvariantCulture, $"{(int)elapsed.TotalMinutes} min ago");
        return string.Create(CultureInfo.InvariantCulture, $"{(int)elapsed.TotalHours} h ago");
    }

    public static string FormatBytes(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double value = bytes;
        var unit = 0;
        while (value >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        return value == Math.Floor(value)
            ? string.Create(CultureInfo.InvariantCulture, $"{value:0} {units[unit]}")
            : string.Create(CultureInfo.InvariantCulture, $"{value:0.#} {units[unit]}");
    }
}

/// <summary>An ended session kept queryable for a while (config retention): its record and how it ended.</summary>
public sealed record SessionTombstone(SessionRecord Record, SessionEndReason EndReason, int? ExitCode, bool OutOfMemory)
{
    public string KernelId => Record.KernelId;
}

/// <summary>The session ended; the message says how and when (e.g. "session X ended 3 min ago: oom-killed (limit 1 GiB)").</summary>
public sealed class SessionEndedException(SessionTombstone tombstone)
    : Exception($"session {tombstone.KernelId} {tombstone.EndReason.DescribeAgo(DateTimeOffset.UtcNow)}")
{
    public SessionTombstone Tombstone { get; } = tombstone;
}
