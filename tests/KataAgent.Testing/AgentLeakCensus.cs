using System.Diagnostics;
using System.Text.RegularExpressions;
using KataAgent.Core;

namespace KataAgent.Testing;

/// <summary>
/// Everything a session can leave behind, counted from the source of truth for each (containerd,
/// /proc, /proc/self/mountinfo, /var/run/netns, iptables, the data dir, the agent's own books). After all sessions are
/// destroyed every list must be empty. (<see cref="LeakCensus"/> is the containerd-only census for tests below the agent.)
/// </summary>
public sealed record AgentLeakCensus(
    IReadOnlyList<string> Containers,
    IReadOnlyList<string> Tasks,
    IReadOnlyList<string> ActiveSnapshots,
    IReadOnlyList<string> Leases,
    IReadOnlyList<string> UnreferencedContent,
    IReadOnlyList<string> NetworkNamespaces,
    IReadOnlyList<string> CniChains,
    IReadOnlyList<string> ShimProcesses,
    IReadOnlyList<string> ScratchDirs,
    IReadOnlyList<int> AllocatedPorts,
    IReadOnlyList<string> ResourceAllocations,
    IReadOnlyList<string> SessionRecords,
    IReadOnlyList<string> SessionCgroups,
    IReadOnlyList<string> GuardEntries,
    IReadOnlyList<string> StagingMounts)
{
    /// <summary>Session scratch disks still mounted under the scratch root.</summary>
    public IReadOnlyList<string> ScratchMounts { get; init; } = [];
    /// <summary>Loop devices backed by a scratch disk image.</summary>
    public IReadOnlyList<string> LoopDevices { get; init; } = [];
    /// <summary>Scratch disk image files.</summary>
    public IReadOnlyList<string> ScratchDiskImages { get; init; } = [];
    /// <summary>Running log relays and their FIFOs.</summary>
    public IReadOnlyList<string> LogRelays { get; init; } = [];

    public bool IsClean => Counts.Values.All(c => c == 0);

    public IReadOnlyDictionary<string, int> Counts => new Dictionary<string, int>
    {
        ["containers"] = Containers.Count,
        ["tasks"] = Tasks.Count,
        ["active snapshots"] = ActiveSnapshots.Count,
        ["leases"] = Leases.Count,
        ["unreferenced content"] = UnreferencedContent.Count,
        ["network namespaces"] = NetworkNamespaces.Count,
        ["CNI iptables chains"] = CniChains.Count,
        ["shim processes"] = ShimProcesses.Count,
        ["scratch dirs"] = ScratchDirs.Count,
        ["allocated ports"] = AllocatedPorts.Count,
        ["resource allocations"] = ResourceAllocations.Count,
        ["session records"] = SessionRecords.Count,
        ["session cgroups"] = SessionCgroups.Count,
        ["guard entries"] = GuardEntries.Count,
        ["staging mounts"] = StagingMounts.Count,
        ["scratch mounts"] = ScratchMounts.Count,
        ["loop devices"] = LoopDevices.Count,
        ["scratch disk images"] = ScratchDiskImages.Count,
        ["log relays"] = LogRelays.Count,
    };

    public override string ToString() => string.Join(", ", Counts.Select(kv => $"{kv.Key}={kv.Value}")) +
        (IsClean ? "" : " | " + string.Join("; ", new[]
        {
            Describe("containers", Containers), Describe("tasks", Tasks), Describe("snapshots", ActiveSnapshots), Describe("leases", Leases),
            Describe("content", UnreferencedContent), Describe("netns", NetworkNamespaces), Describe("chains", CniChains),
            Describe("shims", ShimProcesses), Describe("scratch", ScratchDirs), Describe("ports", AllocatedPorts.Select(p => p.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToList()),
            Describe("allocations", ResourceAllocations), Describe("records", SessionRecords), Describe("cgroups", SessionCgroups), Describe("guard", GuardEntries),
            Describe("staging", StagingMounts), Describe("scratch mounts", ScratchMounts), Describe("loop devices", LoopDevices), Describe("scratch disk images", ScratchDiskImages), Describe("log relays", LogRelays),
        }.Where(s => s.Length > 0)));

    private static string Describe(string name, IReadOnlyList<string> items) => items.Count == 0 ? "" : $"{name}: {string.Join(", ", items.Take(5))}";

    public static async Task<AgentLeakCensus> TakeAsync(Agent agent, CancellationToken cancellationToken = default)
    {
        var client = agent.Containerd;
        var containers = (await client.Containers.ListAsync(cancellationToken).ConfigureAwait(false)).Select(c => c.Id).ToList();
        var tasks = (await client.Tasks.ListAsync(cancellationToken: cancellationToken).ConfigureAwait(false)).Select(t => t.ContainerId).ToList();
        var snapshots = (await client.Snapshots.ListAsync(cancellationToken: cancellationToken).ConfigureAwait(false))
            .Where(s => s.Kind != global::Containerd.Services.Snapshots.V1.Kind.Committed).Select(s => s.Name).ToList();
        var leases = (await client.Leases.ListAsync(cancellationToken).ConfigureAwait(false)).Select(l => l.Id).ToList();
        var unreferenced = await UnreferencedContentAsync(client, cancellationToken).ConfigureAwait(false);
        var prefix = agent.Services.Network.Options.NetnsPrefix;
        var netns = agent.Services.Network.Namespaces.List().Where(n => n.StartsWith(prefix, StringComparison.Ordinal)).ToList();
        var chains = await CniChainsAsync(agent.Options.NetworkName, cancellationToken).ConfigureAwait(false);
        var shims = ShimsOf(client.Address);
        var scratch = Directory.Exists(agent.Options.ScratchRoot) ? Directory.GetDirectories(agent.Options.ScratchRoot).Select(Path.GetFileName).OfType<string>().ToList() : [];
        var disks = Core.ScratchQuota.ScratchDisks.For(agent.Options, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var records = (await agent.Services.Store.LoadAllAsync(cancellationToken).ConfigureAwait(false)).Select(r => r.KernelId).ToList();
        return new AgentLeakCensus(containers, tasks, snapshots, leases, unreferenced, netns, chains, shims, scratch,
            agent.Services.Ports.InUse, agent.Resources.Allocations.Select(a => a.KernelId).ToList(), records, agent.Services.Cgroups.Children(),
            agent.Services.Network.Guard is { } guard ? await guard.ListEntriesAsync(cancellationToken).ConfigureAwait(false) : [],
            agent.Services.MountStaging.Leftovers())
        {
            ScratchMounts = disks.Mounts(),
            LoopDevices = disks.LoopDevices(),
            ScratchDiskImages = disks.Images(),
            LogRelays = [.. agent.Services.LogRelays.Running.Select(id => "relay " + id), .. agent.Services.LogRelays.Fifos()],
        };
    }

    /// <summary>Content that no image reaches through containerd's own GC reference labels.</summary>
    private static async Task<IReadOnlyList<string>> UnreferencedContentAsync(Containerd.ContainerdClient client, CancellationToken cancellationToken)
    {
        var all = (await client.Content.ListAsync(cancellationToken).ConfigureAwait(false)).ToDictionary(c => c.Digest, StringComparer.Ordinal);
        var reached = new HashSet<string>(StringComparer.Ordinal);
        var pending = new Stack<string>((await client.Images.ListAsync(cancellationToken).ConfigureAwait(false)).Select(i => i.Target.Digest));
        while (pending.TryPop(out var digest))
        {
            if (!reached.Add(digest) || !all.TryGetValue(digest, out var info))
                continue;
            foreach (var (key, value) in info.Labels)
            {
                if (key.StartsWith("containerd.io/gc.ref.content", StringComparison.Ordinal))
                    pending.Push(value);
            }
        }
        return all.Keys.Where(d => !reached.Contains(d)).ToList();
    }

    /// <summary>Per-container CNI chains of this agent's network (CNI tags their rules with the network name).</summary>
    private static async Task<IReadOnlyList<string>> CniChainsAsync(string network, CancellationToken cancellationToken)
    {
        var result = new List<string>();
        foreach (var table in new[] { "nat", "filter" })
        {
            var psi = new ProcessStartInfo("iptables", ["-w", "-t", table, "-S"]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = Process.Start(psi)!;
            var output = await process.StandardOutput.ReadToEndAsync(cancellationToken).ConfigureAwait(false);
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
            var lines = output.Split('\n');
            // portmap tags the jump into each CNI-DN-<hash> chain with "dnat name: \"<network>\" id: ...";
            // bridge tags its CNI-<hash> masquerade rules the same way.
            var ours = new HashSet<string>(StringComparer.Ordinal);
            foreach (var line in lines.Where(l => l.Contains($"name: \\\"{network}\\\"", StringComparison.Ordinal)))
            {
                var parts = line.Split(' ');
                ours.Add(parts[1]);
                var jump = Array.IndexOf(parts, "-j");
                if (jump >= 0 && jump + 1 < parts.Length)
                    ours.Add(parts[jump + 1]);
            }
            result.AddRange(lines.Where(l => PerContainerChain.IsMatch(l) && ours.Contains(l[3..].Trim())).Select(l => $"{table}:{l[3..]}"));
        }
        return result;
    }

    // Per-container chains; the shared CNI-HOSTPORT-*, CNI-FORWARD, CNI-ADMIN stay by design.
    private static readonly Regex PerContainerChain = new("^-N CNI-(DN-)?[0-9a-f]{8,}", RegexOptions.Compiled);

    private static IReadOnlyList<string> ShimsOf(string containerdSocket)
    {
        var result = new List<string>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out _))
                continue;
            try
            {
                var cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
                if (cmdline.Contains("containerd-shim", StringComparison.Ordinal) && cmdline.Contains(containerdSocket, StringComparison.Ordinal))
                    result.Add($"{Path.GetFileName(dir)}: {cmdline.Trim()}");
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return result;
    }
}
