using System.Net;
using System.Net.Sockets;

namespace KataAgent.Network.Tests;

public sealed class HostPortPoolTests
{
    private static bool AlwaysFree(int port) => true;

    [Fact]
    public void Allocates_distinct_ports_round_robin_and_releases_them()
    {
        var pool = new HostPortPool(41300, 41309, isFreeOnHost: AlwaysFree);
        Assert.Equal(10, pool.Capacity);
        var first = pool.Allocate(3);
        Assert.Equal([41300, 41301, 41302], first);
        pool.Release([41301]);
        // The cursor moves on: a just-released port is not handed out again at once.
        Assert.Equal([41303], pool.Allocate(1));
        Assert.Equal([41300, 41302, 41303], pool.InUse);
        pool.Release([41301, 41301, 40000]); // idempotent, ignores unknown ports
        Assert.Empty(pool.Allocate(0));
    }

    [Fact]
    public void Exhaustion_is_refused_with_a_clear_error_and_allocates_nothing()
    {
        var bound = new HashSet<int> { 41402 };
        var pool = new HostPortPool(41400, 41404, isFreeOnHost: p => !bound.Contains(p));
        pool.Allocate(2);
        var e = Assert.Throws<HostPortPoolExhaustedException>(() => pool.Allocate(3));
        Assert.Contains("41400-41404", e.Message);
        Assert.Contains("3 port(s) requested, 2 free", e.Message);
        Assert.Contains("2 held by sessions", e.Message);
        Assert.Contains("1 bound by other processes", e.Message);
        Assert.Equal(3, e.Requested);
        Assert.Equal(2, e.HeldBySessions);
        Assert.Equal(1, e.BoundElsewhere);
        Assert.Equal([41400, 41401], pool.InUse);
        Assert.Equal([41403, 41404], pool.Allocate(2));
        Assert.Throws<HostPortPoolExhaustedException>(() => pool.Allocate(1));
    }

    [Fact]
    public void Ports_bound_on_the_host_are_skipped()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        int port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        Assert.False(HostPortPool.IsTcpPortFree(port));

        // A pool over just that port and a free neighbour hands out only the neighbour.
        int neighbour = port < 65535 ? port + 1 : port - 1;
        Skip.IfNot(HostPortPool.IsTcpPortFree(neighbour), "neighbouring port happens to be in use");
        var pool = new HostPortPool(Math.Min(port, neighbour), Math.Max(port, neighbour));
        Assert.Equal([neighbour], pool.Allocate(1));
        var e = Assert.Throws<HostPortPoolExhaustedException>(() => pool.Allocate(1));
        Assert.Equal(1, e.BoundElsewhere);
    }

    [Fact]
    public void Rebuilt_from_the_ports_sessions_hold_after_a_restart()
    {
        var before = new HostPortPool(41500, 41509, isFreeOnHost: AlwaysFree);
        var held = before.Allocate(4);
        before.Release([held[1]]);

        var after = new HostPortPool(41500, 41509, before.InUse.Append(50000), AlwaysFree); // out-of-range ignored
        Assert.Equal(before.InUse, after.InUse);
        var next = after.Allocate(7);
        Assert.Empty(next.Intersect(before.InUse));
        Assert.Throws<HostPortPoolExhaustedException>(() => after.Allocate(1));

        var marked = new HostPortPool(41500, 41501, isFreeOnHost: AlwaysFree);
        marked.MarkInUse([41500]);
        Assert.Equal([41501], marked.Allocate(1));
    }

    [Fact]
    public async Task Concurrent_allocation_never_hands_out_a_port_twice()
    {
        var pool = new HostPortPool(41600, 41999, isFreeOnHost: AlwaysFree);
        var results = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(() =>
        {
            var mine = new List<int>();
            for (int i = 0; i < 50; i++)
                mine.AddRange(pool.Allocate(1));
            return mine;
        })));
        var all = results.SelectMany(r => r).ToList();
        Assert.Equal(400, all.Count);
        Assert.Equal(400, all.Distinct().Count());
        Assert.Throws<HostPortPoolExhaustedException>(() => pool.Allocate(1));
    }

    [Fact]
    public void Invalid_ranges_are_refused()
    {
        Assert.Throws<ArgumentException>(() => new HostPortPool(31000, 30000));
        Assert.Throws<ArgumentException>(() => new HostPortPool(0, 10));
        Assert.Throws<ArgumentException>(() => new HostPortPool(1, 70000));
        Assert.Throws<ArgumentOutOfRangeException>(() => new HostPortPool().Allocate(-1));
        var defaults = new HostPortPool(isFreeOnHost: AlwaysFree);
        Assert.Equal((30000, 31000), (defaults.FirstPort, defaults.LastPort));
    }
}
