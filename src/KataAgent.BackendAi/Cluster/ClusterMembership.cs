using Microsoft.Extensions.Logging;

namespace KataAgent.BackendAi.Cluster;

/// <summary>
/// The agent's registration in etcd, in Backend.AI's order: node key <c>nodes/agents/{id}/</c> = "starting", wait for
/// a manager (unless skipped), read the cluster config; once the RPC server serves: <c>ip</c> and "running".
/// </summary>
public sealed class ClusterMembership(EtcdConfigStore etcd, BackendAiClusterOptions options, ILogger logger)
{
    public async Task<ClusterConfig> JoinAsync(CancellationToken cancellationToken = default)
    {
        await etcd.PutAsync("", "starting", ConfigScope.Node, cancellationToken).ConfigureAwait(false);
        if (options.SkipManagerDetection)
        {
            logger.LogInformation("not waiting for a manager (skip manager detection)");
        }
        else
        {
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            if (options.ManagerWaitTimeout is { } limit)
                wait.CancelAfter(limit);
            try
            {
                await etcd.WaitForManagerAsync(cancellationToken: wait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new BackendAiConfigException($"no manager came up within {options.ManagerWaitTimeout} (etcd {etcd.FullKey("nodes/manager")})");
            }
        }
        var config = await ClusterConfig.ReadAsync(etcd, cancellationToken).ConfigureAwait(false);
        logger.LogInformation("cluster config: Redis {Host}:{Port}, vfolder mount {Mount}", config.Redis.Host, config.Redis.Port, config.Volumes.Mount ?? "(storage proxy)");
        return config;
    }

    /// <summary>Announces the RPC host (nodes/agents/{id}/ip) and marks the agent running.</summary>
    public Task MarkRunningAsync(CancellationToken cancellationToken = default) =>
        MarkRunningAsync(options.ManagerFacingRpcAddress, cancellationToken);

    /// <summary>As above, with the address the RPC server really bound (its listen port may have been 0).</summary>
    public async Task MarkRunningAsync(string address, CancellationToken cancellationToken = default)
    {
        var colon = address.LastIndexOf(':');
        var host = (colon > 0 ? address[..colon] : address).Trim('[', ']');
        await etcd.PutAsync("ip", host, ConfigScope.Node, cancellationToken).ConfigureAwait(false);
        await etcd.PutAsync("", "running", ConfigScope.Node, cancellationToken).ConfigureAwait(false);
    }
}
