using KataAgent.BackendAi.Cluster;
using KataAgent.BackendAi.Events;
using KataAgent.BackendAi.Kernels;
using KataAgent.BackendAi.Rpc;
using KataAgent.BackendAi.Serialization;
using KataAgent.Core;
using Microsoft.Extensions.Logging;

namespace KataAgent.BackendAi.Hosting;

/// <summary>
/// This agent as a Backend.AI agent: joins the cluster through etcd, sends its events to the manager's Redis stream,
/// serves the manager's RPC calls on the Callosum port and heartbeats. Started by <c>kata-agent serve</c> when
/// <c>[backendai]</c> is configured; disposing leaves the cluster (agent_terminated) and keeps the sessions running.
/// </summary>
public sealed class BackendAiAgentHost : IAsyncDisposable
{
    private readonly List<Func<ValueTask>> _teardown = [];
    private readonly ILogger _logger;

    private BackendAiAgentHost(ILogger logger) => _logger = logger;

    /// <summary>The bound RPC endpoint (tcp://host:port).</summary>
    public string RpcEndpoint { get; private set; } = "";

    /// <summary>host:port the manager is told to dial (heartbeat addr, etcd ip).</summary>
    public string ManagerFacingAddress { get; private set; } = "";

    public ClusterConfig? ClusterConfig { get; private set; }

    public static async Task<BackendAiAgentHost> StartAsync(Agent agent, BackendAiOptions options, ILoggerFactory loggerFactory,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(agent);
        ArgumentNullException.ThrowIfNull(options);
        var logger = loggerFactory.CreateLogger("backendai");
        var host = new BackendAiAgentHost(logger);
        try
        {
            await host.JoinAsync(agent, options, cancellationToken).ConfigureAwait(false);
            return host;
        }
        catch
        {
            await host.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    // Each part registers its own teardown as soon as it exists, so a failure half-way leaves nothing running.
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2000", Justification = "each part is owned by _teardown, which DisposeAsync runs")]
    private async Task JoinAsync(Agent agent, BackendAiOptions options, CancellationToken cancellationToken)
    {
        var cluster = options.Cluster;
        var codec = new BackendAiCodec();
        var etcd = await EtcdConfigStore.ConnectAsync(cluster, _logger, cancellationToken).ConfigureAwait(false);
        _teardown.Add(() =>
        {
            etcd.Dispose();
            return ValueTask.CompletedTask;
        });
        var membership = new ClusterMembership(etcd, cluster, _logger);
        ClusterConfig = await membership.JoinAsync(cancellationToken).ConfigureAwait(false);

        var events = await RedisEventProducer.StartAsync(ClusterConfig.Redis.ToProducerOptions(), cluster.AgentId, codec, _logger, cancellationToken)
            .ConfigureAwait(false);
        _teardown.Add(events.DisposeAsync);

        var curve = options.AgentKeypairPath is { } keypair ? CallosumCurveOptions.FromFiles(keypair, options.ManagerPublicKeyPath) : null;
        // The RPC socket binds before the methods know the address the manager dials: the listen port may be 0 (tests).
        var dispatcher = new DeferredDispatcher();
        var rpc = new CallosumRpcServer(new CallosumRpcServerOptions { Endpoint = "tcp://" + cluster.RpcListenAddress, Curve = curve },
            dispatcher, codec, _logger);
        _teardown.Add(rpc.DisposeAsync);
        RpcEndpoint = rpc.Endpoint;
        ManagerFacingAddress = cluster.AdvertisedRpcAddress ?? BoundAddress(rpc.Endpoint);
        var rpcHost = HostOf(ManagerFacingAddress);

        var terminations = new KernelTerminations();
        var methods = new BackendAiAgentMethods(agent, events, options.MethodOptions(ManagerFacingAddress, options.PublicHost ?? rpcHost),
            terminations, _logger);
        _teardown.Add(methods.DisposeAsync);
        var kernelEvents = new KernelEvents(agent, events, terminations, _logger);
        kernelEvents.Start();
        _teardown.Add(kernelEvents.DisposeAsync);
        dispatcher.Target = methods;

        await membership.MarkRunningAsync(ManagerFacingAddress, cancellationToken).ConfigureAwait(false);
        var heartbeat = new AgentHeartbeat(new AgentHeartbeatOptions
        {
            AgentId = cluster.AgentId,
            RpcAddress = ManagerFacingAddress,
            Region = cluster.Region,
            ScalingGroup = cluster.ScalingGroup,
            PublicHost = options.PublicHost,
            PublicKey = curve is null ? null : System.Text.Encoding.ASCII.GetBytes(curve.ServerCertificate.PublicKeyZ85),
            HeartbeatInterval = cluster.HeartbeatInterval,
            StatusHeartbeatInterval = cluster.StatusHeartbeatInterval,
        }, new CoreAgentFacts(agent, _logger), events, codec, _logger);
        await heartbeat.StartAsync(cancellationToken).ConfigureAwait(false);
        _teardown.Add(heartbeat.DisposeAsync);
        _logger.LogInformation("joined Backend.AI cluster as agent {AgentId} (scaling group {ScalingGroup}): RPC on {Endpoint}, manager dials {Address}",
            cluster.AgentId, cluster.ScalingGroup, RpcEndpoint, ManagerFacingAddress);
    }

    /// <summary>The bound endpoint as host:port; a wildcard bind is announced with this host's name for the manager.</summary>
    private static string BoundAddress(string endpoint)
    {
        var address = endpoint.StartsWith("tcp://", StringComparison.Ordinal) ? endpoint["tcp://".Length..] : endpoint;
        var host = HostOf(address);
        return host is "0.0.0.0" or "*" or "::" ? System.Net.Dns.GetHostName() + address[host.Length..] : address;
    }

    private static string HostOf(string address)
    {
        var colon = address.LastIndexOf(':');
        return (colon > 0 ? address[..colon] : address).Trim('[', ']');
    }

    /// <summary>Leaves the cluster in reverse order: heartbeat (agent_terminated), events, RPC, etcd.</summary>
    public async ValueTask DisposeAsync()
    {
        for (var i = _teardown.Count - 1; i >= 0; i--)
        {
            try
            {
                await _teardown[i]().ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                _logger.LogWarning(e, "leaving the Backend.AI cluster: a part failed to stop");
            }
        }
        _teardown.Clear();
    }

    /// <summary>Answers nothing until the methods exist (a call that comes first gets an unknown-method ERROR).</summary>
    private sealed class DeferredDispatcher : IRpcDispatcher
    {
        public volatile IRpcDispatcher? Target;

        public bool TryGetHandler(string method, out RpcHandler handler)
        {
            if (Target is { } target)
                return target.TryGetHandler(method, out handler);
            handler = null!;
            return false;
        }
    }
}
