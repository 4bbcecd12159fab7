using System.Globalization;

namespace KataAgent.Testing;

/// <summary>
/// Which indexes a kind of test agent draws from and what an index makes: bridge/CNI network/netns prefix
/// <c>{Prefix}{index}</c>, subnet <c>10.{SubnetOctet}.{index}.0/24</c>, ports <c>PortBase + index * PortsPerIndex</c> on.
/// </summary>
/// <param name="Prefix">Names the bridge, the CNI network and the netns prefix (at most 10 characters with the index).</param>
/// <param name="SubnetOctet">Second octet of the subnet: one per kind of fixture, so a leftover is easy to attribute.</param>
/// <param name="PortBase">First published port of index 0; keep every range below the kernel's ephemeral range (32768+).</param>
/// <param name="PortsPerIndex">Published ports per agent.</param>
/// <param name="FirstIndex">First index of the pool.</param>
/// <param name="IndexCount">Indexes in the pool (at most 256 - <paramref name="FirstIndex"/>: the index is a subnet octet).</param>
public sealed record TestNetworkPlan(string Prefix, int SubnetOctet, int PortBase, int PortsPerIndex, int FirstIndex, int IndexCount);

/// <summary>
/// A network index held exclusively, host-wide, for the life of one test agent: its bridge, subnet, netns prefix and
/// port range are nobody else's. Fixtures of one process must never share a network, or one agent's start-up cleanup
/// would take another's sessions; test runs of other checkouts on this host run side by side, and two agents with one
/// index took each other's guard set elements, so sessions answered nobody.
/// </summary>
/// <remarks>
/// Every kind of fixture (in-process agents, API servers, CLI environments) draws from one lock directory, so an index
/// is held by one agent at a time whatever its kind. The lock is an flock on /tmp/kata-agent-test-index/INDEX, held
/// open until <see cref="Dispose"/>; the kernel drops it when a run is killed. An index whose bridge exists is skipped
/// too: a run of an older checkout may pick indexes without taking the lock.
/// </remarks>
public sealed class TestNetwork : IDisposable
{
    public const string LockDirectory = "/tmp/kata-agent-test-index";

    private static int _taken;
    private readonly FileStream _lock;

    private TestNetwork(TestNetworkPlan plan, int index, FileStream held)
    {
        Index = index;
        Name = plan.Prefix + index.ToString(CultureInfo.InvariantCulture);
        Subnet = $"10.{plan.SubnetOctet}.{index}.0/24";
        PortRangeStart = plan.PortBase + index * plan.PortsPerIndex;
        PortRangeEnd = PortRangeStart + plan.PortsPerIndex - 1;
        _lock = held;
    }

    public int Index { get; }

    /// <summary>The bridge, the CNI network's name, and (with a dash) the netns prefix.</summary>
    public string Name { get; }

    public string NetnsPrefix => Name + "-";

    public string Subnet { get; }

    public int PortRangeStart { get; }

    public int PortRangeEnd { get; }

    /// <summary>Takes a free index of the plan's pool; throws when every one is held.</summary>
    public static TestNetwork Take(TestNetworkPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (plan.FirstIndex < 0 || plan.IndexCount <= 0 || plan.FirstIndex + plan.IndexCount > 256)
            throw new ArgumentOutOfRangeException(nameof(plan), plan, "indexes must lie in 0-255 (they are a subnet octet)");
        Directory.CreateDirectory(LockDirectory);
        // Spread the start by process too: runs of older checkouts pick by pid without the lock.
        var start = Environment.ProcessId + Interlocked.Increment(ref _taken);
        for (var i = 0; i < plan.IndexCount; i++)
        {
            var index = plan.FirstIndex + (start + i) % plan.IndexCount;
            if (Directory.Exists($"/sys/class/net/{plan.Prefix}{index}"))
                continue;
            try
            {
                // FileShare.None is an flock(LOCK_EX | LOCK_NB) on Linux: taken by another fixture, here or elsewhere, it throws.
                var held = new FileStream(Path.Combine(LockDirectory, index.ToString(CultureInfo.InvariantCulture)), FileMode.OpenOrCreate,
                    FileAccess.ReadWrite, FileShare.None);
                return new TestNetwork(plan, index, held);
            }
            catch (IOException)
            {
            }
        }
        throw new InvalidOperationException(
            $"all {plan.IndexCount} test network indexes {plan.FirstIndex}-{plan.FirstIndex + plan.IndexCount - 1} are held (locks in {LockDirectory})");
    }

    /// <summary>Removes the bridge and the agent's guard tables for it; the index stays held until <see cref="Dispose"/>.</summary>
    public Task DeleteLinkAsync() => HostNetwork.DeleteLinkAsync(Name);

    public void Dispose() => _lock.Dispose();

    public override string ToString() => $"{Name} ({Subnet}, ports {PortRangeStart}-{PortRangeEnd})";
}
