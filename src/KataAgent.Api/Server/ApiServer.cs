using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Prometheus;
using CoreAgent = KataAgent.Core.Agent;

namespace KataAgent.Api.Server;

/// <summary>
/// `kata-agent serve`'s gRPC server: Kestrel on a unix socket (mode 0660, configurable group) and
/// optionally on TCP, where every request must carry the bearer token — checked before routing, so a
/// refused call does no work at all. Stopping stops accepting, lets in-flight calls finish (up to the
/// shutdown timeout) and leaves the sessions running: they are recovered on the next start.
/// </summary>
public sealed partial class ApiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ApiServerOptions _options;
    private readonly ILogger _logger;
    private bool _stopped;

    private ApiServer(WebApplication app, ApiServerOptions options, ILogger logger)
    {
        _app = app;
        _options = options;
        _logger = logger;
    }

    public string SocketPath => _options.SocketPath;

    /// <summary>The TCP endpoint actually bound (port 0 in the options picks a free one); null without TCP.</summary>
    public IPEndPoint? TcpEndpoint { get; private set; }

    public IPEndPoint? MetricsEndpoint { get; private set; }

    /// <summary>Cancelled when the server begins to stop (e.g. on SIGTERM when hosted by the CLI).</summary>
    public CancellationToken Stopping => _app.Lifetime.ApplicationStopping;

    public static async Task<ApiServer> StartAsync(CoreAgent agent, ApiServerOptions options, ILoggerFactory loggerFactory, CancellationToken cancellationToken = default)
    {
        Validate(options);
        var logger = loggerFactory.CreateLogger("kata-agent.api");
        await PrepareSocketPathAsync(options.SocketPath, cancellationToken);

        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore();
        builder.Services.AddRoutingCore();
        builder.Services.AddSingleton(loggerFactory);
        builder.Services.AddSingleton(typeof(ILogger<>), typeof(Logger<>));
        builder.Services.AddSingleton(agent);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);
        builder.Services.AddGrpc(o =>
        {
            o.Interceptors.Add<ErrorMappingInterceptor>();
            o.MaxReceiveMessageSize = options.MaxMessageBytes;
            o.MaxSendMessageSize = options.MaxMessageBytes;
        });
        IPEndPoint? tcp = string.IsNullOrEmpty(options.TcpListen) ? null : ParseEndpoint(options.TcpListen, "api.tcp_listen");
        IPEndPoint? metrics = string.IsNullOrEmpty(options.MetricsListen) ? null : ParseEndpoint(options.MetricsListen, "metrics.listen");
        // Kestrel writes the bound endpoint (the real port for port 0) back into these.
        ListenOptions? tcpListen = null, metricsListen = null;
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.ListenUnixSocket(options.SocketPath, l => l.Protocols = HttpProtocols.Http2);
            if (tcp is not null)
            {
                k.Listen(tcp, l =>
                {
                    tcpListen = l;
                    if (!string.IsNullOrEmpty(options.TlsCertificatePath))
                    {
                        l.Protocols = HttpProtocols.Http1AndHttp2;
                        l.UseHttps(LoadCertificate(options));
                    }
                    else
                    {
                        // Plain TCP: HTTP/2 with prior knowledge, as gRPC clients speak it.
                        l.Protocols = HttpProtocols.Http2;
                    }
                });
            }
            if (metrics is not null)
            {
                k.Listen(metrics, l =>
                {
                    metricsListen = l;
                    l.Protocols = HttpProtocols.Http1;
                });
            }
        });

        var app = builder.Build();
        var server = new ApiServer(app, options, logger);
        app.UseRouting();
        app.Use((context, next) => server.GuardAsync(context, next));
        app.MapGrpcService<SessionsService>();
        app.MapGrpcService<ImagesService>();
        app.MapGrpcService<AgentService>();
        if (metrics is not null)
        {
            ApiMetrics.TrackSessions(agent);
            PoolMetrics.Track(agent);
            app.MapMetrics("/metrics");
        }
        await app.StartAsync(cancellationToken);
        try
        {
            SecureSocket(options);
            server.TcpEndpoint = tcpListen?.IPEndPoint;
            server.MetricsEndpoint = metricsListen?.IPEndPoint;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
        logger.LogInformation("listening on unix:{Socket}{Tcp}{Metrics}", options.SocketPath,
            server.TcpEndpoint is null ? "" : $" and tcp {(string.IsNullOrEmpty(options.TlsCertificatePath) ? "" : "(tls) ")}{server.TcpEndpoint}",
            server.MetricsEndpoint is null ? "" : $"; metrics on http://{server.MetricsEndpoint}/metrics");
        return server;
    }

    /// <summary>Waits until the host is asked to stop (Ctrl-C, SIGTERM, or <see cref="StopAsync"/>).</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_stopped)
            return;
        _stopped = true;
        _logger.LogInformation("stopping: no new calls; waiting up to {Timeout} s for calls in flight; sessions keep running",
            _options.ShutdownTimeout.TotalSeconds);
        await _app.StopAsync(cancellationToken);
        TryDelete(_options.SocketPath);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        await _app.DisposeAsync();
    }

    /// <summary>Token check for TCP connections (unix socket clients are vetted by the socket's mode), before any routing to a service.</summary>
    private Task GuardAsync(HttpContext context, RequestDelegate next)
    {
        var local = context.Connection.LocalIpAddress;
        if (local is null)
            return next(context); // unix socket
        if (MetricsEndpoint is { } m && context.Connection.LocalPort == m.Port)
        {
            if (context.Request.Path == "/metrics")
                return next(context);
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return Task.CompletedTask;
        }
        var header = context.Request.Headers.Authorization.ToString();
        const string Scheme = "Bearer ";
        var presented = header.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase) ? header[Scheme.Length..].Trim() : "";
        if (presented.Length > 0 && FixedTimeEquals(presented, _options.Token))
            return next(context);
        _logger.LogWarning("refused a call to {Path} from {Remote}: {Reason}", context.Request.Path, context.Connection.RemoteIpAddress,
            presented.Length == 0 ? "no bearer token" : "wrong bearer token");
        // A trailers-only gRPC response: the client sees status Unauthenticated.
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "application/grpc";
        context.Response.Headers["grpc-status"] = "16";
        context.Response.Headers["grpc-message"] = presented.Length == 0
            ? "this endpoint needs a bearer token (authorization: Bearer <api.token>)"
            : "the bearer token is not valid for this agent";
        return Task.CompletedTask;
    }

    private static bool FixedTimeEquals(string presented, string expected) =>
        CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(presented)), SHA256.HashData(Encoding.UTF8.GetBytes(expected)));

    private static void Validate(ApiServerOptions options)
    {
        if (string.IsNullOrEmpty(options.SocketPath))
            throw new ArgumentException("api.socket: a unix socket path is required");
        if (!string.IsNullOrEmpty(options.TcpListen) && string.IsNullOrEmpty(options.Token))
            throw new ArgumentException("api.tcp_listen is set but api.token is empty: TCP clients must present a bearer token");
        if (string.IsNullOrEmpty(options.TlsCertificatePath) != string.IsNullOrEmpty(options.TlsKeyPath))
            throw new ArgumentException("api.tls_cert and api.tls_key go together: set both or neither");
    }

    private static X509Certificate2 LoadCertificate(ApiServerOptions options)
    {
        try
        {
            return X509Certificate2.CreateFromPemFile(options.TlsCertificatePath, options.TlsKeyPath);
        }
        catch (Exception e) when (e is IOException or CryptographicException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"api.tls_cert/api.tls_key: cannot load '{options.TlsCertificatePath}': {e.Message}", e);
        }
    }

    public static IPEndPoint ParseEndpoint(string text, string key)
    {
        if (IPEndPoint.TryParse(text, out var endpoint) && endpoint.Port is >= 0 and <= 65535 && text.Contains(':', StringComparison.Ordinal))
            return endpoint;
        var colon = text.LastIndexOf(':');
        if (colon > 0 && text[..colon] == "localhost" && int.TryParse(text[(colon + 1)..], out var port) && port is >= 0 and <= 65535)
            return new IPEndPoint(IPAddress.Loopback, port);
        throw new ArgumentException($"{key}: '{text}' is not host:port (for example 127.0.0.1:7443 or [::1]:7443)");
    }

    /// <summary>A stale socket file (a crashed serve) is removed; a live one means another serve is running.</summary>
    private static async Task PrepareSocketPathAsync(string path, CancellationToken cancellationToken)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        if (!File.Exists(path))
            return;
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await probe.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken);
        }
        catch (SocketException)
        {
            File.Delete(path);
            return;
        }
        throw new InvalidOperationException($"another kata-agent serve is listening on {path}; stop it first or set api.socket to another path");
    }

    private static void SecureSocket(ApiServerOptions options)
    {
        File.SetUnixFileMode(options.SocketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite);
        if (string.IsNullOrEmpty(options.SocketGroup))
            return;
        var gid = ResolveGroup(options.SocketGroup);
        if (Chown(options.SocketPath, uint.MaxValue, gid) != 0)
            throw new InvalidOperationException($"api.socket_group: cannot give {options.SocketPath} to group '{options.SocketGroup}' (errno {Marshal.GetLastPInvokeError()})");
    }

    public static uint ResolveGroup(string group)
    {
        if (uint.TryParse(group, out var numeric))
            return numeric;
        foreach (var line in File.ReadLines("/etc/group"))
        {
            var fields = line.Split(':');
            if (fields.Length >= 3 && fields[0] == group && uint.TryParse(fields[2], out var gid))
                return gid;
        }
        throw new ArgumentException($"api.socket_group: no group '{group}' in /etc/group");
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }

    [LibraryImport("libc", EntryPoint = "chown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Chown(string path, uint owner, uint group);
}
