using System.Globalization;
using System.Net.Sockets;

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
/// Every kind of fixture (in-process agents, API servers, CLI environments) draws from one set of locks, so an index
/// is held by one agent at a time whatever its kind. The lock is an abstract unix socket
/// <c>@kata-agent-test-index-INDEX</c>, bound until <see cref="Dispose"/>: abstract names live in the network
/// namespace, exactly what two runs fight over (bridges, iptables, nftables), even when they see different /tmp
/// directories (a CI checkout in its own mount namespace beside a developer's run; an flock in /tmp let two such runs
/// share an index, and one's DNAT rules captured the other's ports). The kernel drops it when a run is killed. An
/// index whose bridge exists is skipped too: a run of an older checkout may pick indexes without taking the lock.
/// </remarks>
public sealed class TestNetwork : IDisposable
{
    private static int _taken;
    private readonly Socket _lock;

    private TestNetwork(TestNetworkPlan plan, int index, Socket held)
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
        // Spread the start by process too: runs of older checkouts pick by pid without the lock.
        var start = Environment.ProcessId + Interlocked.Increment(ref _taken);
        for (var i = 0; i < plan.IndexCount; i++)
        {
            var index = plan.FirstIndex + (start + i) % plan.IndexCount;
            if (Directory.Exists($"/sys/class/net/{plan.Prefix}{index}"))
                continue;
            var held = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                held.Bind(new UnixDomainSocketEndPoint("\0kata-agent-test-index-" + index.ToString(CultureInfo.InvariantCulture)));
                return new TestNetwork(plan, index, held);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
            {
                held.Dispose();
            }
        }
        throw new InvalidOperationException(
            $"all {plan.IndexCount} test network indexes {plan.FirstIndex}-{plan.FirstIndex + plan.IndexCount - 1} are held by other test agents on this host");
    }

    /// <summary>Removes the bridge and the agent's guard tables for it; the index stays held until <see cref="Dispose"/>.</summary>
    public Task DeleteLinkAsync() => HostNetwork.DeleteLinkAsync(Name);

    public void Dispose() => _lock.Dispose();

    public override string ToString() => $"{Name} ({Subnet}, ports {PortRangeStart}-{PortRangeEnd})";
}
