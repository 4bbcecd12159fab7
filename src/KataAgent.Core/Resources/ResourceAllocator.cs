using System.Globalization;

namespace KataAgent.Core.Resources;

public sealed record ResourceSlots(double Cpus, long MemoryBytes)
{
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"cpu={Cpus:0.##} mem={MemoryBytes / (1024.0 * 1024):0} MiB");
}

/// <summary>What one session holds: its own slots plus its runtime class's host overhead (a VM's shim + VMM + virtiofsd).</summary>
public sealed record ResourceAllocation(string KernelId, ResourceSlots Slots, long OverheadBytes)
{
    /// <summary>Host cores the session is pinned to (cpuset syntax, e.g. "0-1"); empty = not pinned.</summary>
    public string CpuSet { get; init; } = "";
}

public sealed class InsufficientResourcesException(string message) : Exception(message);

/// <summary>
/// Keeps the agent from promising more than the host has: capacity is the host minus the
/// reservation, and a session also costs its runtime class's overhead (a Kata VM's). Thread-safe.
/// </summary>
public sealed class ResourceAllocator
{
    private readonly object _gate = new();
    private readonly Dictionary<string, ResourceAllocation> _allocations = new(StringComparer.Ordinal);
    private readonly int[] _cores;

    public ResourceAllocator(ResourceOptions options)
    {
        var hostCpus = options.TotalCpus ?? Environment.ProcessorCount;
        var hostMemory = options.TotalMemoryBytes ?? HostMemoryBytes();
        // Overcommit multiplies what sessions may ask for in total, not the cores they can be pinned to.
        Capacity = new ResourceSlots(Math.Max(0, hostCpus - options.ReservedCpus) * options.CpuOvercommit, Math.Max(0, hostMemory - options.ReservedMemoryBytes));
        // Reserved cores are the lowest-numbered ones (where the host's own daemons usually sit).
        _cores = HostCores().Skip(options.ReservedCpus).ToArray();
        if (_cores.Length == 0)
            _cores = HostCores().ToArray();
    }

    public ResourceSlots Capacity { get; }

    public ResourceSlots Used
    {
        get
        {
            lock (_gate)
                return new ResourceSlots(_allocations.Values.Sum(a => a.Slots.Cpus), _allocations.Values.Sum(a => a.Slots.MemoryBytes + a.OverheadBytes));
        }
    }

    public ResourceSlots Available
    {
        get
        {
            var used = Used;
            return new ResourceSlots(Capacity.Cpus - used.Cpus, Capacity.MemoryBytes - used.MemoryBytes);
        }
    }

    /// <summary>
    /// Reserves slots plus the runtime class's host overhead (RuntimeClassStatus.OverheadBytes; 0 for runc and
    /// gVisor), or refuses, saying what is short and by how much; nothing is held on refusal.
    /// </summary>
    public ResourceAllocation Allocate(string kernelId, ResourceSlots slots, long overheadBytes)
    {
        if (slots.Cpus <= 0 || double.IsNaN(slots.Cpus))
            throw new ArgumentOutOfRangeException(nameof(slots), $"cpu must be positive (got {slots.Cpus})");
        if (slots.MemoryBytes <= 0)
            throw new ArgumentOutOfRangeException(nameof(slots), $"memory must be positive (got {slots.MemoryBytes})");
        ArgumentOutOfRangeException.ThrowIfNegative(overheadBytes);
        var overhead = overheadBytes;
        lock (_gate)
        {
            if (_allocations.ContainsKey(kernelId))
                throw new InvalidOperationException($"resources for {kernelId} are already allocated");
            var used = new ResourceSlots(_allocations.Values.Sum(a => a.Slots.Cpus), _allocations.Values.Sum(a => a.Slots.MemoryBytes + a.OverheadBytes));
            var shortages = new List<string>();
            var cpuShort = used.Cpus + slots.Cpus - Capacity.Cpus;
            if (cpuShort > 1e-9)
                shortages.Add(string.Create(CultureInfo.InvariantCulture, $"cpu short by {cpuShort:0.##} (asked {slots.Cpus:0.##}, free {Capacity.Cpus - used.Cpus:0.##})"));
            var memShort = used.MemoryBytes + slots.MemoryBytes + overhead - Capacity.MemoryBytes;
            if (memShort > 0)
            {
                shortages.Add(string.Create(CultureInfo.InvariantCulture,
                    $"memory short by {Mib(memShort)} MiB (asked {Mib(slots.MemoryBytes)} MiB{(overhead > 0 ? $" + {Mib(overhead)} MiB VM overhead" : "")}, free {Mib(Capacity.MemoryBytes - used.MemoryBytes)} MiB)"));
            }

            if (shortages.Count > 0)
                throw new InsufficientResourcesException("the session does not fit: " + string.Join("; ", shortages) + Holders());
            var allocation = new ResourceAllocation(kernelId, slots, overhead) { CpuSet = PickCores(slots.Cpus) };
            _allocations[kernelId] = allocation;
            return allocation;
        }
    }

    // Who holds the room, largest first, so the refusal says which sessions to look at.
    private string Holders()
    {
        if (_allocations.Count == 0)
            return "";
        var top = _allocations.Values.OrderByDescending(a => a.Slots.Cpus).ThenByDescending(a => a.Slots.MemoryBytes).ToList();
        var listed = string.Join(", ", top.Take(5).Select(a => string.Create(CultureInfo.InvariantCulture,
            $"{a.KernelId} (cpu {a.Slots.Cpus:0.##}, {Mib(a.Slots.MemoryBytes + a.OverheadBytes)} MiB)")));
        return $"; held by {top.Count} session(s): {listed}{(top.Count > 5 ? ", ..." : "")} (see: kata-agent session ls)";
    }

    /// <summary>Re-registers an allocation found after a restart (no capacity check: it already runs).</summary>
    public void Restore(ResourceAllocation allocation)
    {
        lock (_gate)
            _allocations[allocation.KernelId] = allocation;
    }

    public bool Release(string kernelId)
    {
        lock (_gate)
            return _allocations.Remove(kernelId);
    }

    public IReadOnlyList<ResourceAllocation> Allocations
    {
        get
        {
            lock (_gate)
                return _allocations.Values.ToList();
        }
    }

    /// <summary>
    /// The least-loaded cores, as many as the request rounds up to. Load counts the share of each
    /// core that sessions pinned there asked for, so whole-core sessions spread out first.
    /// </summary>
    private string PickCores(double cpus)
    {
        var load = _cores.ToDictionary(c => c, _ => 0.0);
        foreach (var a in _allocations.Values)
        {
            var cores = ParseCpuSet(a.CpuSet);
            foreach (var core in cores.Where(load.ContainsKey))
                load[core] += a.Slots.Cpus / cores.Count;
        }
        var count = Math.Min(_cores.Length, (int)Math.Ceiling(cpus));
        var chosen = load.OrderBy(kv => kv.Value).ThenBy(kv => kv.Key).Take(count).Select(kv => kv.Key).Order().ToList();
        return FormatCpuSet(chosen);
    }

    public static IReadOnlyList<int> ParseCpuSet(string cpuset)
    {
        var result = new List<int>();
        foreach (var part in cpuset.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var range = part.Split('-');
            var first = int.Parse(range[0], CultureInfo.InvariantCulture);
            var last = range.Length > 1 ? int.Parse(range[1], CultureInfo.InvariantCulture) : first;
            for (var c = first; c <= last; c++)
                result.Add(c);
        }
        return result;
    }

    public static string FormatCpuSet(IReadOnlyList<int> cores)
    {
        var parts = new List<string>();
        for (var i = 0; i < cores.Count;)
        {
            var j = i;
            while (j + 1 < cores.Count && cores[j + 1] == cores[j] + 1)
                j++;
            parts.Add(i == j ? cores[i].ToString(CultureInfo.InvariantCulture) : $"{cores[i].ToString(CultureInfo.InvariantCulture)}-{cores[j].ToString(CultureInfo.InvariantCulture)}");
            i = j + 1;
        }
        return string.Join(',', parts);
    }

    private static IEnumerable<int> HostCores()
    {
        try
        {
            return ParseCpuSet(File.ReadAllText("/sys/devices/system/cpu/online").Trim());
        }
        catch (IOException)
        {
            return Enumerable.Range(0, Environment.ProcessorCount);
        }
    }

    private static long Mib(long bytes) => bytes / (1024 * 1024);

    private static long HostMemoryBytes()
    {
        foreach (var line in File.ReadLines("/proc/meminfo"))
        {
            if (!line.StartsWith("MemTotal:", StringComparison.Ordinal))
                continue;
            var kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
            return kb * 1024;
        }
        throw new InvalidOperationException("/proc/meminfo has no MemTotal");
    }
}
