using KataAgent.Containerd.Services;
using V1 = Io.Containerd.Cgroups.V1;
using V2 = Io.Containerd.Cgroups.V2;

namespace KataAgent.Core.Stats;

/// <summary>The cumulative counters of one task's cgroup, decoded from containerd's v1 or v2 metrics.</summary>
public sealed record CgroupCounters(
    string Source,
    DateTimeOffset Timestamp,
    CpuCounters? Cpu,
    MemoryCounters? Memory,
    BlockIoStats? BlockIo,
    PidsStats? Pids)
{
    public const string SourceV1 = "cgroup-v1";
    public const string SourceV2 = "cgroup-v2";
    public const string SourceNone = "none";

    /// <summary>Limits at or above this are the kernel's "no limit" (v1 reports PAGE_COUNTER_MAX pages; v2 "max" decodes as ulong.MaxValue).</summary>
    private const ulong Unlimited = 1UL << 62;

    public static CgroupCounters None(DateTimeOffset timestamp) => new(SourceNone, timestamp, null, null, null, null);

    /// <summary>Decodes a task's metrics; <see cref="None"/> when the payload is missing or of a type not known here.</summary>
    public static CgroupCounters From(TaskMetrics metrics)
    {
        var timestamp = metrics.Timestamp == default ? DateTimeOffset.UtcNow : metrics.Timestamp;
        return metrics.Data switch
        {
            V1.Metrics v1 => FromV1(v1, timestamp),
            V2.Metrics v2 => FromV2(v2, timestamp),
            _ => None(timestamp),
        };
    }

    public static CgroupCounters FromV1(V1.Metrics m, DateTimeOffset timestamp)
    {
        CpuCounters? cpu = m.Cpu?.Usage is { } usage
            ? new CpuCounters(usage.Total, usage.User, usage.Kernel, m.Cpu.Throttling?.ThrottledPeriods ?? 0)
            : null;
        MemoryCounters? memory = m.Memory is { } mem
            ? new MemoryCounters(mem.Usage?.Usage ?? 0, mem.Usage?.Max, Limit(mem.Usage?.Limit), mem.TotalRss, mem.TotalCache)
            : null;
        // No per-device entry at all: the kernel accounted nothing for this cgroup (Linux 6.x counts v1 blkio bytes only once
        // blk-throttle is active on the disk's queue: some cgroup had a throttle rule for it since boot). That is reported as unknown, not as zero.
        BlockIoStats? io = null;
        if (m.Blkio is { } blkio && blkio.IoServiceBytesRecursive.Count > 0)
        {
            ulong read = 0, write = 0;
            foreach (var entry in blkio.IoServiceBytesRecursive)
            {
                if (string.Equals(entry.Op, "read", StringComparison.OrdinalIgnoreCase))
                    read += entry.Value;
                else if (string.Equals(entry.Op, "write", StringComparison.OrdinalIgnoreCase))
                    write += entry.Value;
            }
            io = new BlockIoStats(read, write);
        }
        PidsStats? pids = m.Pids is { } p ? new PidsStats(p.Current, Limit(p.Limit)) : null;
        return new CgroupCounters(SourceV1, timestamp, cpu, memory, io, pids);
    }

    public static CgroupCounters FromV2(V2.Metrics m, DateTimeOffset timestamp)
    {
        // v2 reports microseconds.
        CpuCounters? cpu = m.Cpu is { } c ? new CpuCounters(c.UsageUsec * 1000, c.UserUsec * 1000, c.SystemUsec * 1000, c.NrThrottled) : null;
        // containerd 1.6's v2 metrics carry no memory.peak: the peak is what the samples saw.
        MemoryCounters? memory = m.Memory is { } mem ? new MemoryCounters(mem.Usage, null, Limit(mem.UsageLimit), mem.Anon, mem.File) : null;
        BlockIoStats? io = null;
        if (m.Io is { } stat && stat.Usage.Count > 0)
        {
            ulong read = 0, write = 0;
            foreach (var entry in stat.Usage)
            {
                read += entry.Rbytes;
                write += entry.Wbytes;
            }
            io = new BlockIoStats(read, write);
        }
        PidsStats? pids = m.Pids is { } p ? new PidsStats(p.Current, Limit(p.Limit)) : null;
        return new CgroupCounters(SourceV2, timestamp, cpu, memory, io, pids);
    }

    private static ulong? Limit(ulong? value) => value is null or 0 or >= Unlimited ? null : value;
}

public sealed record CpuCounters(ulong UsageNanos, ulong UserNanos, ulong SystemNanos, ulong ThrottledPeriods);

/// <param name="MaxUsageBytes">the cgroup's own high-water mark, when it reports one (v1)</param>
public sealed record MemoryCounters(ulong UsageBytes, ulong? MaxUsageBytes, ulong? LimitBytes, ulong AnonymousBytes, ulong CacheBytes);
