using System.Text.Json;
using System.Text.Json.Serialization;

namespace KataAgent.Core.Stats;

/// <summary>
/// One sample of a session's resource usage. Counters are cumulative since the container started; rates are
/// computed against the previous sample of the same session. A section is null when the runtime did not report
/// it (the task is gone, or its cgroup has no such controller); see Stats/README.md for what each runtime reports.
/// </summary>
public sealed record SessionStats
{
    public required string KernelId { get; init; }
    public required DateTimeOffset Timestamp { get; init; }

    /// <summary>Where the counters came from: <c>cgroup-v1</c>, <c>cgroup-v2</c>, or <c>none</c> (no metrics for the task).</summary>
    public required string Source { get; init; }

    public CpuStats? Cpu { get; init; }
    public MemoryStats? Memory { get; init; }
    public BlockIoStats? BlockIo { get; init; }
    public PidsStats? Pids { get; init; }
    public NetworkStats? Network { get; init; }

    public string ToJson() => JsonSerializer.Serialize(this, StatsJson.Options);
}

/// <param name="UsageNanos">CPU time used by all the session's processes</param>
/// <param name="UserNanos">of which in user mode</param>
/// <param name="SystemNanos">of which in kernel mode</param>
/// <param name="Percent">utilisation since the previous sample, 100 = one core busy; null for a session's first sample</param>
/// <param name="ThrottledPeriods">CFS periods in which the session hit its CPU quota</param>
public sealed record CpuStats(ulong UsageNanos, ulong UserNanos, ulong SystemNanos, double? Percent, ulong ThrottledPeriods);

/// <param name="UsageBytes">memory charged to the session's cgroup (anonymous memory and page cache)</param>
/// <param name="PeakBytes">cgroup v1: the cgroup's max_usage; cgroup v2 (whose metrics carry no peak): the highest usage sampled</param>
/// <param name="LimitBytes">the cgroup's limit; null when unlimited</param>
/// <param name="AnonymousBytes">rss (v1) / anon (v2)</param>
/// <param name="CacheBytes">page cache (v1 cache, v2 file)</param>
public sealed record MemoryStats(ulong UsageBytes, ulong PeakBytes, ulong? LimitBytes, ulong AnonymousBytes, ulong CacheBytes);

/// <summary>
/// Bytes the session's cgroup read from or wrote to block devices, summed over devices. Null in a sample when the
/// kernel accounted no device for the cgroup: no I/O yet, or (cgroup v1, Linux 6.x) blk-throttle has never been
/// active on the disk since boot, and then the kernel counts nothing.
/// </summary>
public sealed record BlockIoStats(ulong ReadBytes, ulong WriteBytes);

/// <param name="Limit">null when unlimited</param>
public sealed record PidsStats(ulong Current, ulong? Limit);

/// <summary>Counters of the session's interface in its network namespace (rx = received by the session).</summary>
public sealed record NetworkStats(long RxBytes, long TxBytes, long RxPackets, long TxPackets);

/// <summary>Host totals, read from /proc/stat and /proc/meminfo.</summary>
/// <param name="CpuCount">CPUs the kernel lists in /proc/stat</param>
/// <param name="CpuBusySeconds">CPU time spent not idle since boot, all CPUs</param>
/// <param name="CpuPercent">utilisation since the previous host sample (since boot for the first), 100 = one core busy</param>
public sealed record HostStats(
    DateTimeOffset Timestamp,
    int CpuCount,
    double CpuBusySeconds,
    double CpuPercent,
    ulong MemoryTotalBytes,
    ulong MemoryAvailableBytes,
    ulong MemoryUsedBytes,
    int Sessions)
{
    public string ToJson() => JsonSerializer.Serialize(this, StatsJson.Options);
}

internal static class StatsJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        WriteIndented = true,
    };
}
