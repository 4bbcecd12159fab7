using System.Net;
using System.Net.Sockets;

namespace KataAgent.Network;

/// <summary>
/// Host TCP ports for publishing session ports. A port is handed out only if no session holds it and nothing
/// on the host listens on it (checked by binding it; portmap's DNAT rules bind nothing, hence the pool's own
/// bookkeeping). Allocation walks the range round-robin so a just-released port is not reused at once
/// (stale conntrack entries and slow clients). Thread-safe. Not persisted by itself: after a restart the agent
/// rebuilds it from the ports its sessions record (<see cref="MarkInUse"/>).
/// </summary>
public sealed class HostPortPool
{
    public const int DefaultFirstPort = 30000;
    public const int DefaultLastPort = 31000;

    private readonly Lock _lock = new();
    private readonly HashSet<int> _inUse = [];
    private readonly Func<int, bool> _isFreeOnHost;
    private int _next;

    public HostPortPool(int firstPort = DefaultFirstPort, int lastPort = DefaultLastPort, IEnumerable<int>? inUse = null, Func<int, bool>? isFreeOnHost = null)
    {
        if (firstPort is < 1 or > 65535 || lastPort is < 1 or > 65535 || firstPort > lastPort)
            throw new ArgumentException($"invalid host port range {firstPort}-{lastPort}");
        FirstPort = firstPort;
        LastPort = lastPort;
        _next = firstPort;
        _isFreeOnHost = isFreeOnHost ?? IsTcpPortFree;
        if (inUse is not null)
            MarkInUse(inUse);
    }

    public int FirstPort { get; }
    public int LastPort { get; }
    public int Capacity => LastPort - FirstPort + 1;

    /// <summary>Ports currently handed out, sorted (what to persist, if the caller persists the pool itself).</summary>
    public IReadOnlyList<int> InUse
    {
        get
        {
            lock (_lock)
                return _inUse.Order().ToList();
        }
    }

    /// <summary>
    /// Hands out <paramref name="count"/> distinct ports, all or none. Throws <see cref="HostPortPoolExhaustedException"/>
    /// if the range does not have that many that are neither allocated nor bound on the host.
    /// </summary>
    public IReadOnlyList<int> Allocate(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count == 0)
            return [];
        lock (_lock)
        {
            var picked = new List<int>(count);
            int boundElsewhere = 0;
            int port = _next;
            for (int scanned = 0; scanned < Capacity && picked.Count < count; scanned++)
            {
                if (!_inUse.Contains(port))
                {
                    if (_isFreeOnHost(port))
                        picked.Add(port);
                    else
                        boundElsewhere++;
                }
                port = port == LastPort ? FirstPort : port + 1;
            }
            if (picked.Count < count)
            {
                throw new HostPortPoolExhaustedException(count, FirstPort, LastPort, _inUse.Count, boundElsewhere,
                    $"host port pool {FirstPort}-{LastPort} exhausted: {count} port(s) requested, {picked.Count} free "
                    + $"({_inUse.Count} held by sessions, {boundElsewhere} bound by other processes)");
            }
            foreach (int p in picked)
                _inUse.Add(p);
            _next = port;
            return picked;
        }
    }

    /// <summary>Returns ports to the pool; ports not held are ignored (release is idempotent).</summary>
    public void Release(IEnumerable<int> ports)
    {
        ArgumentNullException.ThrowIfNull(ports);
        lock (_lock)
        {
            foreach (int port in ports)
                _inUse.Remove(port);
        }
    }

    /// <summary>Records ports as held (rebuilding after a restart). Ports outside the range are ignored: they cannot be handed out anyway.</summary>
    public void MarkInUse(IEnumerable<int> ports)
    {
        ArgumentNullException.ThrowIfNull(ports);
        lock (_lock)
        {
            foreach (int port in ports)
            {
                if (port >= FirstPort && port <= LastPort)
                    _inUse.Add(port);
            }
        }
    }

    /// <summary>True if a TCP socket can bind the port on all IPv4 addresses, i.e. nothing listens on it.</summary>
    public static bool IsTcpPortFree(int port)
    {
        try
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.Any, port));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}

public sealed class HostPortPoolExhaustedException : InvalidOperationException
{
    public HostPortPoolExhaustedException(int requested, int firstPort, int lastPort, int heldBySessions, int boundElsewhere, string message)
        : base(message)
    {
        Requested = requested;
        FirstPort = firstPort;
        LastPort = lastPort;
        HeldBySessions = heldBySessions;
        BoundElsewhere = boundElsewhere;
    }

    public int Requested { get; }
    public int FirstPort { get; }
    public int LastPort { get; }
    public int HeldBySessions { get; }
    public int BoundElsewhere { get; }
}
