using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using KataAgent.Api.V1;

namespace KataAgent.Api.Client;

/// <summary>A client of `kata-agent serve`: over its unix socket, or over TCP with a bearer token.</summary>
public sealed class ApiClient : IDisposable
{
    private readonly GrpcChannel _channel;

    private ApiClient(GrpcChannel channel, CallInvoker invoker, string target)
    {
        _channel = channel;
        Target = target;
        Sessions = new Sessions.SessionsClient(invoker);
        Images = new V1.Images.ImagesClient(invoker);
        Agent = new V1.Agent.AgentClient(invoker);
    }

    public string Target { get; }
    public Sessions.SessionsClient Sessions { get; }
    public V1.Images.ImagesClient Images { get; }
    public V1.Agent.AgentClient Agent { get; }

    public static ApiClient ForUnixSocket(string socketPath)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
            EnableMultipleHttp2Connections = true,
        };
        var channel = GrpcChannel.ForAddress("http://localhost", Options(handler));
        return new ApiClient(channel, channel.CreateCallInvoker(), "unix:" + socketPath);
    }

    /// <summary><paramref name="address"/>: http://host:port (plain HTTP/2) or https://host:port (TLS).</summary>
    /// <param name="pinnedCertificate">with https: trust exactly this server certificate (an agent's self-signed one) instead of the system's CAs</param>
    public static ApiClient ForTcp(Uri address, string? token, X509Certificate2? pinnedCertificate = null)
    {
        var handler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true };
        if (pinnedCertificate is not null)
        {
            handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                certificate is not null && certificate.GetCertHashString(HashAlgorithmName.SHA256) == pinnedCertificate.GetCertHashString(HashAlgorithmName.SHA256);
        }
        var channel = GrpcChannel.ForAddress(address, Options(handler));
        var invoker = channel.CreateCallInvoker();
        if (!string.IsNullOrEmpty(token))
        {
            invoker = invoker.Intercept(metadata =>
            {
                metadata.Add("authorization", "Bearer " + token);
                return metadata;
            });
        }
        return new ApiClient(channel, invoker, address.ToString());
    }

    /// <summary>True when something accepts connections on the socket (a serve is running).</summary>
    public static async Task<bool> IsListeningAsync(string socketPath, CancellationToken cancellationToken = default)
    {
        if (!File.Exists(socketPath))
            return false;
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await probe.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private static GrpcChannelOptions Options(HttpMessageHandler handler) => new()
    {
        HttpHandler = handler,
        MaxReceiveMessageSize = 16 * 1024 * 1024,
        MaxSendMessageSize = 16 * 1024 * 1024,
        DisposeHttpClient = true,
    };

    public void Dispose() => _channel.Dispose();
}
