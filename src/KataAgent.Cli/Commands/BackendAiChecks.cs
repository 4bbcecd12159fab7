using System.Net.Sockets;
using KataAgent.BackendAi.Cluster;
using KataAgent.BackendAi.Hosting;
using KataAgent.BackendAi.Rpc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Cli.Commands;

/// <summary>`kata-agent doctor` with [backendai] set: etcd answers, it names the manager's Redis and that answers, the RPC port.</summary>
internal static class BackendAiChecks
{
    public const string Area = "backendai";

    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(3);

    public static async Task<IReadOnlyList<DoctorCommand.Check>> RunAsync(BackendAiOptions options, CancellationToken cancellationToken)
    {
        var checks = new List<DoctorCommand.Check>();
        var cluster = options.Cluster;
        EtcdConfigStore etcd;
        try
        {
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            limit.CancelAfter(ConnectTimeout * 2);
            etcd = await EtcdConfigStore.ConnectAsync(cluster, NullLogger.Instance, limit.Token);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            checks.Add(new(Area, "etcd", false, $"{string.Join(", ", cluster.EtcdEndpoints)}: {e.Message}"));
            checks.Add(new(Area, "redis", false, "not checked: etcd (config/redis) is not reachable"));
            checks.Add(await RpcPortCheckAsync(options, cancellationToken));
            return checks;
        }
        using (etcd)
        {
            checks.Add(new(Area, "etcd", true, $"{etcd.Endpoint} (namespace {cluster.Namespace})"));
            try
            {
                var config = await ClusterConfig.ReadAsync(etcd, cancellationToken);
                checks.Add(await TcpCheckAsync("redis", config.Redis.Host, config.Redis.Port,
                    $"{config.Redis.Host}:{config.Redis.Port} (from {etcd.FullKey("config/redis")})", cancellationToken));
            }
            catch (BackendAiConfigException e)
            {
                checks.Add(new(Area, "redis", false, e.Message));
            }
        }
        checks.Add(await RpcPortCheckAsync(options, cancellationToken));
        return checks;
    }

    /// <summary>Free to bind, or served by a Callosum server (an agent running); anything else holding it is a problem.</summary>
    private static async Task<DoctorCommand.Check> RpcPortCheckAsync(BackendAiOptions options, CancellationToken cancellationToken)
    {
        var listen = options.Cluster.RpcListenAddress;
        var colon = listen.LastIndexOf(':');
        var host = listen[..colon].Trim('[', ']');
        var port = int.Parse(listen[(colon + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        var address = host is "0.0.0.0" or "*" ? System.Net.IPAddress.Any : System.Net.IPAddress.Parse(host);
        try
        {
            using var listener = new TcpListener(address, port);
            listener.Start();
            return new(Area, "rpc port", true, $"{listen} is free");
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            var probe = address.Equals(System.Net.IPAddress.Any) ? "127.0.0.1" : host;
            // The manager's own handshake: only a Callosum server (kata-agent serve) answers it.
            var serverKey = options.AgentKeypairPath is { } keypair ? ZmqCertificateFile.Load(keypair).PublicKeyZ85 : null;
            var answered = await CallosumPing.ProbeAsync($"tcp://{probe}:{port}", ConnectTimeout, serverKey, cancellationToken);
            return answered
                ? new(Area, "rpc port", true, $"{listen} is in use by a Callosum server that answers PING (a running kata-agent serve)")
                : new(Area, "rpc port", false, $"{listen} is in use by something that does not answer Callosum's PING within 3 s: " +
                    "stop it or set [backendai] rpc_listen to a free port");
        }
        catch (Exception e) when (e is SocketException or FormatException or InvalidDataException or IOException)
        {
            return new(Area, "rpc port", false, $"{listen}: {e.Message}");
        }
    }

    private static async Task<DoctorCommand.Check> TcpCheckAsync(string name, string host, int port, string detail, CancellationToken cancellationToken)
    {
        using var client = new TcpClient();
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(ConnectTimeout);
        try
        {
            await client.ConnectAsync(host, port, limit.Token);
            return new(Area, name, true, $"{detail} accepts connections");
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            return new(Area, name, false, $"{detail}: {(e is OperationCanceledException ? "no answer within 3 s" : e.Message)}");
        }
    }
}
