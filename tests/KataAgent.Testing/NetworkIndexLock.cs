using System.Globalization;
using System.Net.Sockets;

namespace KataAgent.Testing;

/// <summary>
/// Exclusive use of one test network index (bridge, subnet, port range, netns prefix) on this host's network stack.
/// The lock is an abstract unix socket: abstract names live in the network namespace, which is exactly what two test
/// runs fight over (bridges, iptables, nftables), even when they see different /tmp directories (a CI checkout in its
/// own mount namespace next to a developer's run). The kernel releases it when the process dies.
/// </summary>
public sealed class NetworkIndexLock : IDisposable
{
    private readonly Socket _socket;

    private NetworkIndexLock(int index, Socket socket)
    {
        Index = index;
        _socket = socket;
    }

    public int Index { get; }

    /// <summary>Takes the first free index in [first, first + count), starting at a point that differs per call.</summary>
    public static NetworkIndexLock Take(string family, int first, int count)
    {
        var start = Interlocked.Increment(ref _calls) + Environment.ProcessId;
        for (var i = 0; i < count; i++)
        {
            var index = first + (start + i) % count;
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                socket.Bind(new UnixDomainSocketEndPoint("\0kata-agent-test-" + family + "-" + index.ToString(CultureInfo.InvariantCulture)));
                return new NetworkIndexLock(index, socket);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
            {
                socket.Dispose();
            }
        }
        throw new InvalidOperationException($"all {count} test network indexes {first}-{first + count - 1} ({family}) are held by other test runs on this host");
    }

    private static int _calls;

    public void Dispose() => _socket.Dispose();
}
