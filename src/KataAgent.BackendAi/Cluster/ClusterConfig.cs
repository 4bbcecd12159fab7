using System.Globalization;
using System.Net;
using KataAgent.BackendAi.Events;

namespace KataAgent.BackendAi.Cluster;

/// <summary>The manager's Redis (etcd config/redis): where the agent sends its events.</summary>
public sealed record RedisConfig(string Host, int Port, string? Password, bool UseTls)
{
    public RedisEventProducerOptions ToProducerOptions() => new() { Host = Host, Port = Port, Password = Password, UseTls = UseTls };
}

/// <summary>volumes: where vfolders are mounted on this host (null mount: the storage proxy is used).</summary>
public sealed record VolumesConfig(string? Mount, string FsPrefix);

/// <summary>config/container: the uid/gid kernels run as.</summary>
public sealed record ContainerConfig(int? KernelUid, int? KernelGid);

/// <summary>What the agent reads from etcd at start (BA25 agent/server.py read_agent_config, read_agent_config_container).</summary>
public sealed record ClusterConfig(
    RedisConfig Redis,
    VolumesConfig Volumes,
    IReadOnlyDictionary<string, object> Agent,
    ContainerConfig Container,
    IPNetwork? AgentSubnet,
    IPNetwork? ContainerSubnet)
{
    public static async Task<ClusterConfig> ReadAsync(EtcdConfigStore etcd, CancellationToken cancellationToken = default)
    {
        var redis = ParseRedis(etcd, await etcd.GetPrefixAsync("config/redis", cancellationToken).ConfigureAwait(false));
        var volumes = await etcd.GetPrefixAsync("volumes", cancellationToken).ConfigureAwait(false);
        var agent = await etcd.GetPrefixAsync("config/agent", cancellationToken).ConfigureAwait(false);
        var container = await etcd.GetPrefixAsync("config/container", cancellationToken).ConfigureAwait(false);
        return new ClusterConfig(
            redis,
            new VolumesConfig(Text(volumes, "mount") ?? Text(volumes, "_mount"), Text(volumes, "fsprefix") ?? Text(volumes, "_fsprefix") ?? ""),
            agent,
            new ContainerConfig(Id(etcd, container, "config/container", "kernel-uid"), Id(etcd, container, "config/container", "kernel-gid")),
            await SubnetAsync(etcd, "config/network/subnet/agent", cancellationToken).ConfigureAwait(false),
            await SubnetAsync(etcd, "config/network/subnet/container", cancellationToken).ConfigureAwait(false));
    }

    private static RedisConfig ParseRedis(EtcdConfigStore etcd, IReadOnlyDictionary<string, object> tree)
    {
        // The stream role may have its own server (override_configs/stream), as the Python agent's RedisProfileTarget.
        var section = tree;
        var keyPrefix = "config/redis";
        if (tree.TryGetValue("override_configs", out var overrides) && overrides is IReadOnlyDictionary<string, object> roles &&
            roles.TryGetValue("stream", out var stream) && stream is IReadOnlyDictionary<string, object> streamTree && streamTree.ContainsKey("addr"))
        {
            section = streamTree;
            keyPrefix = "config/redis/override_configs/stream";
        }
        if (section.ContainsKey("sentinel"))
        {
            throw new BackendAiConfigException($"etcd key {etcd.FullKey(keyPrefix + "/sentinel")}: Redis Sentinel is not supported by this agent; " +
                $"set {etcd.FullKey(keyPrefix + "/addr")} to the Redis server's host:port");
        }
        var addrKey = etcd.FullKey(keyPrefix + "/addr");
        if (!section.TryGetValue("addr", out var addr))
            throw new BackendAiConfigException($"etcd key {addrKey} is missing: the manager's Redis address (host:port) is needed for the agent's events");
        var (host, port) = addr switch
        {
            string text => ParseHostPort(text, addrKey),
            IReadOnlyDictionary<string, object> map when Text(map, "host") is { } h && Text(map, "port") is { } p => ParseHostPort($"{h}:{p}", addrKey),
            _ => throw new BackendAiConfigException($"etcd key {addrKey} must be host:port or have host and port below it"),
        };
        var useTls = Text(section, "use_tls") switch
        {
            null => false,
            var t when bool.TryParse(t, out var b) => b,
            "1" => true,
            "0" => false,
            var t => throw new BackendAiConfigException($"etcd key {etcd.FullKey(keyPrefix + "/use_tls")}: '{t}' is not true or false"),
        };
        var password = Text(section, "password");
        return new RedisConfig(host, port, string.IsNullOrEmpty(password) ? null : password, useTls);
    }

    private static (string Host, int Port) ParseHostPort(string text, string key)
    {
        var colon = text.LastIndexOf(':');
        if (colon <= 0 || colon == text.Length - 1)
            throw new BackendAiConfigException($"etcd key {key}: '{text}' is not host:port");
        var host = text[..colon].Trim().Trim('[', ']');
        if (!int.TryParse(text[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
            throw new BackendAiConfigException($"etcd key {key}: '{text}' has no port between 1 and 65535");
        if (host.Length == 0)
            throw new BackendAiConfigException($"etcd key {key}: '{text}' has an empty host");
        return (host, port);
    }

    private static int? Id(EtcdConfigStore etcd, IReadOnlyDictionary<string, object> tree, string prefix, string name)
    {
        var text = Text(tree, name);
        if (text is null)
            return null;
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var id)
            ? id
            : throw new BackendAiConfigException($"etcd key {etcd.FullKey($"{prefix}/{name}")}: '{text}' is not a uid/gid number");
    }

    private static async Task<IPNetwork?> SubnetAsync(EtcdConfigStore etcd, string key, CancellationToken cancellationToken)
    {
        var text = await etcd.GetAsync(key, cancellationToken).ConfigureAwait(false);
        if (string.IsNullOrWhiteSpace(text))
            return null;
        return IPNetwork.TryParse(text.Trim(), out var network)
            ? network
            : throw new BackendAiConfigException($"etcd key {etcd.FullKey(key)}: '{text}' is not a subnet (e.g. 10.0.0.0/8)");
    }

    /// <summary>A leaf's text, also when the key has children (its own value is under "").</summary>
    private static string? Text(IReadOnlyDictionary<string, object> tree, string key) => tree.TryGetValue(key, out var value)
        ? value switch
        {
            string s => s,
            IReadOnlyDictionary<string, object> d when d.TryGetValue("", out var own) => own as string,
            _ => null,
        }
        : null;
}
