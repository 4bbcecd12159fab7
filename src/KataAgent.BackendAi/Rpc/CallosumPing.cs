using NetMQ;
using NetMQ.Sockets;

namespace KataAgent.BackendAi.Rpc;

/// <summary>
/// The manager's handshake as a probe: a DEALER sends <c>["PING", a, b]</c> and a Callosum server answers
/// <c>["PONG", a, b]</c>. Tells a serving agent from anything else that holds the RPC port (`kata-agent doctor`).
/// </summary>
public static class CallosumPing
{
    /// <summary>
    /// True when the server at <paramref name="endpoint"/> (<c>tcp://host:port</c>) answers PONG within
    /// <paramref name="timeout"/>. With <paramref name="serverPublicKeyZ85"/> the probe speaks CURVE to it, as the manager does.
    /// </summary>
    public static Task<bool> ProbeAsync(string endpoint, TimeSpan timeout, string? serverPublicKeyZ85 = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(endpoint);
        // NetMQ's receive blocks: keep it off the caller's thread, bounded by the timeout.
        return Task.Run(() => Probe(endpoint, timeout, serverPublicKeyZ85), cancellationToken);
    }

    private static bool Probe(string endpoint, TimeSpan timeout, string? serverPublicKeyZ85)
    {
        using var dealer = new DealerSocket();
        dealer.Options.Linger = TimeSpan.Zero;
        if (serverPublicKeyZ85 is not null)
        {
            dealer.Options.CurveServerKey = NetMQCertificate.FromPublicKey(serverPublicKeyZ85).PublicKey;
            dealer.Options.CurveCertificate = new NetMQCertificate();
        }
        dealer.Connect(endpoint);
        var nonce = Guid.NewGuid().ToByteArray();
        var ping = new NetMQMessage(3);
        ping.Append("PING"u8.ToArray());
        ping.Append(nonce);
        ping.Append(Array.Empty<byte>());
        if (!dealer.TrySendMultipartMessage(timeout, ping))
            return false;
        var deadline = DateTime.UtcNow + timeout;
        NetMQMessage? reply = null;
        while (DateTime.UtcNow < deadline && dealer.TryReceiveMultipartMessage(deadline - DateTime.UtcNow, ref reply))
        {
            if (reply.FrameCount == 3 && reply[0].ToByteArray().AsSpan().SequenceEqual("PONG"u8) && reply[1].ToByteArray().AsSpan().SequenceEqual(nonce))
                return true;
        }
        return false;
    }
}
