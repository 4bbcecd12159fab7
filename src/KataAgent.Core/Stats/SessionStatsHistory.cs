namespace KataAgent.Core.Stats;

/// <summary>
/// A session's recent samples in a fixed-size ring buffer. Adding raw counters turns them into a sample: CPU
/// utilisation from the delta against the previous one, and (where the cgroup keeps none) the memory peak.
/// Thread-safe: the periodic collector and on-demand reads add to it concurrently.
/// </summary>
public sealed class SessionStatsHistory
{
    private readonly object _gate = new();
    private readonly SessionStats[] _ring;
    private int _next;
    private int _count;
    private ulong _observedPeak;

    public SessionStatsHistory(string kernelId, int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        KernelId = kernelId;
        _ring = new SessionStats[capacity];
    }

    public string KernelId { get; }
    public int Capacity => _ring.Length;

    public SessionStats? Latest
    {
        get
        {
            lock (_gate)
                return _count == 0 ? null : _ring[(_next - 1 + _ring.Length) % _ring.Length];
        }
    }

    /// <summary>Oldest first.</summary>
    public IReadOnlyList<SessionStats> Snapshot()
    {
        lock (_gate)
        {
            var result = new SessionStats[_count];
            var start = (_next - _count + _ring.Length) % _ring.Length;
            for (var i = 0; i < _count; i++)
                result[i] = _ring[(start + i) % _ring.Length];
            return result;
        }
    }

    /// <summary>
    /// Records a sample. A sample older than the latest one (a periodic collection overtaken by an on-demand read)
    /// is not stored, and the latest is returned instead.
    /// </summary>
    public SessionStats Add(CgroupCounters counters, NetworkStats? network)
    {
        lock (_gate)
        {
            var previous = _count == 0 ? null : _ring[(_next - 1 + _ring.Length) % _ring.Length];
            if (previous is not null && counters.Timestamp <= previous.Timestamp)
                return previous;
            var sample = Build(counters, network, previous);
            _ring[_next] = sample;
            _next = (_next + 1) % _ring.Length;
            _count = Math.Min(_count + 1, _ring.Length);
            return sample;
        }
    }

    private SessionStats Build(CgroupCounters counters, NetworkStats? network, SessionStats? previous)
    {
        CpuStats? cpu = null;
        if (counters.Cpu is { } c)
        {
            double? percent = null;
            if (previous?.Cpu is { } before && c.UsageNanos >= before.UsageNanos)
            {
                var elapsed = (counters.Timestamp - previous.Timestamp).TotalNanoseconds;
                if (elapsed > 0)
                    percent = Math.Round((c.UsageNanos - before.UsageNanos) / elapsed * 100, 2);
            }
            cpu = new CpuStats(c.UsageNanos, c.UserNanos, c.SystemNanos, percent, c.ThrottledPeriods);
        }

        MemoryStats? memory = null;
        if (counters.Memory is { } m)
        {
            _observedPeak = Math.Max(_observedPeak, m.UsageBytes);
            memory = new MemoryStats(m.UsageBytes, m.MaxUsageBytes ?? _observedPeak, m.LimitBytes, m.AnonymousBytes, m.CacheBytes);
        }

        return new SessionStats
        {
            KernelId = KernelId,
            Timestamp = counters.Timestamp,
            Source = counters.Source,
            Cpu = cpu,
            Memory = memory,
            BlockIo = counters.BlockIo,
            Pids = counters.Pids,
            Network = network,
        };
    }
}
