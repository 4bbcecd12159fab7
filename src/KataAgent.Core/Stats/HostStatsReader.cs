using System.Globalization;

namespace KataAgent.Core.Stats;

/// <summary>Host CPU and memory totals from /proc (plain file reads: no process is spawned).</summary>
public sealed class HostStatsReader(string procRoot = "/proc")
{
    /// <summary>USER_HZ: the unit of /proc/stat. Linux fixes it at 100 on every architecture the agent runs on.</summary>
    private const double TicksPerSecond = 100;

    private readonly object _gate = new();
    private CpuTicks? _previous;

    /// <summary>Reads the host totals; CPU utilisation is against the previous call (since boot on the first).</summary>
    public async Task<HostStats> ReadAsync(int sessions, CancellationToken cancellationToken = default)
    {
        var stat = await File.ReadAllTextAsync(Path.Combine(procRoot, "stat"), cancellationToken).ConfigureAwait(false);
        var meminfo = await File.ReadAllTextAsync(Path.Combine(procRoot, "meminfo"), cancellationToken).ConfigureAwait(false);
        return Compute(stat, meminfo, sessions, DateTimeOffset.UtcNow);
    }

    /// <summary>Synchronous variant for property getters: /proc is served from memory.</summary>
    public HostStats Read(int sessions) =>
        Compute(File.ReadAllText(Path.Combine(procRoot, "stat")), File.ReadAllText(Path.Combine(procRoot, "meminfo")), sessions, DateTimeOffset.UtcNow);

    /// <summary>Host totals from the texts of /proc/stat and /proc/meminfo.</summary>
    public HostStats Compute(string stat, string meminfo, int sessions, DateTimeOffset now)
    {
        var (ticks, cpuCount) = ParseStat(stat);
        var memory = ParseMeminfo(meminfo);
        double percent;
        lock (_gate)
        {
            var baseline = _previous ?? new CpuTicks(0, 0);
            var total = ticks.Total - baseline.Total;
            percent = total > 0 ? Math.Round((double)(ticks.Busy - baseline.Busy) / total * 100 * cpuCount, 2) : 0;
            _previous = ticks;
        }
        var memTotal = memory.GetValueOrDefault("MemTotal");
        // MemAvailable exists since Linux 3.14; before that, free + cache is the usual estimate.
        var available = memory.TryGetValue("MemAvailable", out var a) ? a
            : memory.GetValueOrDefault("MemFree") + memory.GetValueOrDefault("Cached") + memory.GetValueOrDefault("Buffers");
        return new HostStats(now, cpuCount, Math.Round(ticks.Busy / TicksPerSecond, 2), percent, memTotal, available,
            memTotal > available ? memTotal - available : 0, sessions);
    }

    internal readonly record struct CpuTicks(ulong Busy, ulong Total);

    /// <summary>The aggregate "cpu" line: user nice system idle iowait irq softirq steal (guest time is already in user).</summary>
    internal static (CpuTicks Ticks, int CpuCount) ParseStat(string text)
    {
        CpuTicks? ticks = null;
        var cpus = 0;
        foreach (var line in text.Split('\n'))
        {
            if (line.StartsWith("cpu ", StringComparison.Ordinal))
            {
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
                    .Select(v => ulong.Parse(v, CultureInfo.InvariantCulture)).ToArray();
                ulong At(int i) => i < f.Length ? f[i] : 0;
                var idle = At(3) + At(4);
                var busy = At(0) + At(1) + At(2) + At(5) + At(6) + At(7);
                ticks = new CpuTicks(busy, busy + idle);
            }
            else if (line.StartsWith("cpu", StringComparison.Ordinal) && line.Length > 3 && char.IsAsciiDigit(line[3]))
            {
                cpus++;
            }
        }
        return (ticks ?? throw new FormatException("/proc/stat has no aggregate cpu line"), Math.Max(cpus, 1));
    }

    /// <summary>"Name:   value kB" lines, in bytes.</summary>
    internal static Dictionary<string, ulong> ParseMeminfo(string text)
    {
        var result = new Dictionary<string, ulong>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n'))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
                continue;
            var parts = line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0 || !ulong.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var value))
                continue;
            result[line[..colon]] = parts.Length > 1 && parts[1] == "kB" ? value * 1024 : value;
        }
        return result;
    }
}
