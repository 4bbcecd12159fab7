namespace KataAgent.Api.Server;

/// <summary>Where and how `kata-agent serve` listens.</summary>
public sealed record ApiServerOptions
{
    public const string DefaultSocketPath = "/run/kata-agent/kata-agent.sock";

    /// <summary>Unix socket for local clients (the CLI); file permissions are its access control.</summary>
    public string SocketPath { get; init; } = DefaultSocketPath;

    /// <summary>Group that owns the socket (mode 0660); empty: root's group.</summary>
    public string SocketGroup { get; init; } = "";

    /// <summary>Optional TCP listener ("host:port"); requires <see cref="Token"/>.</summary>
    public string TcpListen { get; init; } = "";

    /// <summary>Bearer token required on TCP; unix socket clients do not need it.</summary>
    public string Token { get; init; } = "";

    /// <summary>PEM certificate and key: the TCP listener speaks TLS when set.</summary>
    public string TlsCertificatePath { get; init; } = "";
    public string TlsKeyPath { get; init; } = "";

    /// <summary>How long shutdown waits for in-flight calls before cutting them.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Optional plain-HTTP listener ("host:port") for Prometheus' /metrics; empty: off.</summary>
    public string MetricsListen { get; init; } = "";

    /// <summary>Largest accepted gRPC message (uploads and imports are chunked, so this stays small).</summary>
    public int MaxMessageBytes { get; init; } = 16 * 1024 * 1024;
}
