using System.Net;
using System.Net.Sockets;
using System.Text;

namespace KataAgent.Network.Tests;

/// <summary>A TCP echo listener inside a namespace (socket created on a thread in it) and a host-side client.</summary>
internal static class Echo
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    public static Task<Socket> ListenInsideAsync(NetworkNamespaces namespaces, string netns, int port) =>
        namespaces.RunInsideAsync(netns, () =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.Any, port));
            socket.Listen(8);
            return socket;
        });

    /// <summary>Accepts one connection, reads a line and answers "pong &lt;line&gt; from &lt;peer&gt;".</summary>
    public static async Task<EndPoint?> ServeOnceAsync(Socket listener, CancellationToken cancellationToken)
    {
        using var connection = await listener.AcceptAsync(cancellationToken);
        await using var stream = new NetworkStream(connection, ownsSocket: false);
        using var reader = new StreamReader(stream, Encoding.ASCII);
        string? line = await reader.ReadLineAsync(cancellationToken);
        byte[] reply = Encoding.ASCII.GetBytes($"pong {line}\n");
        await stream.WriteAsync(reply, cancellationToken);
        connection.Shutdown(SocketShutdown.Send);
        return connection.RemoteEndPoint;
    }

    public static async Task<string> AskAsync(IPAddress address, int port, string line, CancellationToken cancellationToken)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(address, port, cancellationToken);
        await using var stream = client.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(line + "\n"), cancellationToken);
        using var reader = new StreamReader(stream, Encoding.ASCII);
        return (await reader.ReadLineAsync(cancellationToken)) ?? "";
    }
}
