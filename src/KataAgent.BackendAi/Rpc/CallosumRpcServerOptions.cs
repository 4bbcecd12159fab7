using NetMQ;

namespace KataAgent.BackendAi.Rpc;

public sealed class CallosumRpcServerOptions
{
    /// <summary>
    /// Where the ROUTER socket binds (Backend.AI's <c>agent.rpc-listen-addr</c>). Port 0 binds a free port;
    /// <see cref="CallosumRpcServer.Endpoint"/> tells which.
    /// </summary>
    public string Endpoint { get; init; } = "tcp://0.0.0.0:6001";

    /// <summary>CURVE server keys (null: the NULL mechanism, as Backend.AI without <c>rpc-auth-agent-keypair</c>).</summary>
    public CallosumCurveOptions? Curve { get; init; }

    /// <summary>How long disposing waits for cancelled handlers to end before it closes the socket anyway.</summary>
    public TimeSpan ShutdownGrace { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long queued replies may still leave after disposal closes the socket (Callosum: 100 ms).</summary>
    public TimeSpan Linger { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Largest accepted message in bytes; bigger ones drop the connection. Null: no limit (as Callosum).</summary>
    public long? MaxMessageSize { get; init; }
}

/// <summary>
/// CURVE for the RPC socket. <see cref="ManagerPublicKeyZ85"/> is what Backend.AI's ZAP handler admits; NetMQ has no
/// ZAP hook, so it is checked for form and logged but NOT enforced: any client that knows the agent's public key gets
/// in (docs/BACKENDAI.md, section RPC).
/// </summary>
public sealed record CallosumCurveOptions(NetMQCertificate ServerCertificate, string? ManagerPublicKeyZ85 = null)
{
    /// <summary>From Backend.AI's files: the agent's <c>.key_secret</c> and, optionally, the manager's <c>.key</c>.</summary>
    public static CallosumCurveOptions FromFiles(string agentKeypairPath, string? managerPublicKeyPath)
    {
        NetMQCertificate server = ZmqCertificateFile.Load(agentKeypairPath).ServerCertificate(agentKeypairPath);
        string? manager = managerPublicKeyPath is null ? null : ZmqCertificateFile.Load(managerPublicKeyPath).PublicKeyZ85;
        return new CallosumCurveOptions(server, manager);
    }
}
