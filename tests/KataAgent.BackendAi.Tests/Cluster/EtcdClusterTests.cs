using dotnet_etcd;
using KataAgent.BackendAi.Cluster;
using KataAgent.BackendAi.Tests.Infrastructure;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.BackendAi.Tests.Cluster;

/// <summary>
/// Joining a Backend.AI cluster through a real etcd: the test writes the config under /sorna/test-ns/ as the
/// manager does (raw keys through a separate client), the agent reads it and writes its node keys.
/// </summary>
public sealed class EtcdClusterTests
{
    private const string Root = "/sorna/test-ns/";
    private const string AgentId = "i-etcd-test";

    private static BackendAiClusterOptions Options(EtcdServer etcd, bool skipManager = true) => new()
    {
        EtcdEndpoints = [etcd.Endpoint],
        Namespace = "test-ns",
        AgentId = AgentId,
        ScalingGroup = "sg-a",
        RpcListenAddress = "0.0.0.0:6001",
        AdvertisedRpcAddress = "10.9.8.7:16001",
        SkipManagerDetection = skipManager,
    };

    private static async Task PutAsync(EtcdClient client, string key, string value) => await client.PutAsync(Root + key, value);

    private static async Task<string?> ReadAsync(EtcdClient client, string key)
    {
        var response = await client.GetAsync(Root + key);
        return response.Kvs.Count == 0 ? null : response.Kvs[0].Value.ToStringUtf8();
    }

    [SkippableFact]
    public async Task Reads_the_cluster_config_with_Backend_AIs_layout_scopes_and_quoting()
    {
        await using var etcd = await EtcdServer.StartNewAsync();
        using var manager = new EtcdClient(etcd.Endpoint);
        await PutAsync(manager, "config/redis/addr", "127.0.0.1:6380");
        await PutAsync(manager, "config/redis/password", "pw");
        await PutAsync(manager, "config/redis2/addr", "must-not-be-read:1");
        await PutAsync(manager, "volumes/_mount", "/vfroot");
        await PutAsync(manager, "volumes/fsprefix", "local");
        await PutAsync(manager, "config/agent/api/pull-timeout", "600");
        await PutAsync(manager, "config/agent/container-logs/chunk-size", "64K");
        await PutAsync(manager, "config/agent/kernel-lifecycles/init-polling-attempts", "10");
        await PutAsync(manager, "config/agent/quoted/a%2Fb", "slash");
        await PutAsync(manager, "config/container/kernel-uid", "1000");
        await PutAsync(manager, "config/container/kernel-gid", "1000");
        // The node's own scope wins over the scaling group's, which wins over the global one.
        await PutAsync(manager, "sgroup/sg-a/config/container/kernel-gid", "2000");
        await PutAsync(manager, $"nodes/agents/{AgentId}/config/container/kernel-uid", "3000");
        await PutAsync(manager, "config/network/subnet/agent", "10.0.0.0/8");
        await PutAsync(manager, "sgroup/sg-a/config/network/subnet/container", "172.16.0.0/12");

        using var store = await EtcdConfigStore.ConnectAsync(Options(etcd), NullLogger.Instance);
        var config = await ClusterConfig.ReadAsync(store);

        Assert.Equal(new RedisConfig("127.0.0.1", 6380, "pw", false), config.Redis);
        Assert.Equal(new VolumesConfig("/vfroot", "local"), config.Volumes);
        Assert.Equal("600", ((IReadOnlyDictionary<string, object>)config.Agent["api"])["pull-timeout"]);
        Assert.Equal("64K", ((IReadOnlyDictionary<string, object>)config.Agent["container-logs"])["chunk-size"]);
        Assert.Equal("slash", ((IReadOnlyDictionary<string, object>)config.Agent["quoted"])["a/b"]);
        Assert.Equal(new ContainerConfig(3000, 2000), config.Container);
        Assert.Equal(System.Net.IPNetwork.Parse("10.0.0.0/8"), config.AgentSubnet);
        Assert.Equal(System.Net.IPNetwork.Parse("172.16.0.0/12"), config.ContainerSubnet);
    }

    [SkippableFact]
    public async Task Writes_the_node_key_starting_then_running_and_the_ip()
    {
        await using var etcd = await EtcdServer.StartNewAsync();
        using var manager = new EtcdClient(etcd.Endpoint);
        await PutAsync(manager, "config/redis/addr", "127.0.0.1:6380");
        var options = Options(etcd);
        using var store = await EtcdConfigStore.ConnectAsync(options, NullLogger.Instance);
        var membership = new ClusterMembership(store, options, NullLogger.Instance);

        await membership.JoinAsync();
        // Backend.AI puts the node's own status at the scope prefix with its trailing slash.
        Assert.Equal("starting", await ReadAsync(manager, $"nodes/agents/{AgentId}/"));
        Assert.Null(await ReadAsync(manager, $"nodes/agents/{AgentId}/ip"));

        await membership.MarkRunningAsync();
        Assert.Equal("running", await ReadAsync(manager, $"nodes/agents/{AgentId}/"));
        Assert.Equal("10.9.8.7", await ReadAsync(manager, $"nodes/agents/{AgentId}/ip"));
    }

    [SkippableFact]
    public async Task Joining_waits_for_a_manager_until_one_puts_up_under_nodes_manager()
    {
        await using var etcd = await EtcdServer.StartNewAsync();
        using var manager = new EtcdClient(etcd.Endpoint);
        await PutAsync(manager, "config/redis/addr", "127.0.0.1:6380");
        var options = Options(etcd, skipManager: false);
        using var store = await EtcdConfigStore.ConnectAsync(options, NullLogger.Instance);
        var join = new ClusterMembership(store, options, NullLogger.Instance).JoinAsync();

        await Eventually.WaitAsync(async () => await ReadAsync(manager, $"nodes/agents/{AgentId}/") == "starting", "the node key 'starting'");
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.False(join.IsCompleted, "joined with no manager in etcd");

        await PutAsync(manager, "nodes/manager/10.0.0.1:8080", "up");
        var config = await join.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(6380, config.Redis.Port);

        // A second agent finds the key there and does not wait at all.
        var again = await new ClusterMembership(store, options, NullLogger.Instance).JoinAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal("127.0.0.1", again.Redis.Host);
    }

    [SkippableFact]
    public async Task A_manager_key_put_with_another_value_than_up_while_watching_does_not_end_the_wait()
    {
        await using var etcd = await EtcdServer.StartNewAsync();
        using var manager = new EtcdClient(etcd.Endpoint);
        using var store = await EtcdConfigStore.ConnectAsync(Options(etcd, skipManager: false), NullLogger.Instance);
        var watching = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var wait = store.WaitForManagerAsync(() => watching.TrySetResult());

        await watching.Task.WaitAsync(TimeSpan.FromSeconds(60));
        await PutAsync(manager, "nodes/manager/10.0.0.1:8080", "down");
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.False(wait.IsCompleted, "a manager that is not up ended the wait");

        await PutAsync(manager, "nodes/manager/10.0.0.1:8080", "up");
        await wait.WaitAsync(TimeSpan.FromSeconds(60));
    }

    [SkippableFact]
    public async Task A_missing_Redis_address_fails_naming_the_etcd_key()
    {
        await using var etcd = await EtcdServer.StartNewAsync();
        using var manager = new EtcdClient(etcd.Endpoint);
        await PutAsync(manager, "config/redis/password", "pw");
        using var store = await EtcdConfigStore.ConnectAsync(Options(etcd), NullLogger.Instance);

        var e = await Assert.ThrowsAsync<BackendAiConfigException>(() => ClusterConfig.ReadAsync(store));
        Assert.Contains("/sorna/test-ns/config/redis/addr", e.Message, StringComparison.Ordinal);
        Assert.Contains("missing", e.Message, StringComparison.Ordinal);

        await PutAsync(manager, "config/redis/addr", "127.0.0.1:notaport");
        e = await Assert.ThrowsAsync<BackendAiConfigException>(() => ClusterConfig.ReadAsync(store));
        Assert.Contains("/sorna/test-ns/config/redis/addr", e.Message, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task An_unreachable_etcd_fails_naming_the_endpoint()
    {
        var nowhere = $"http://127.0.0.1:{ServerProcess.FreePort()}";
        var options = new BackendAiClusterOptions { EtcdEndpoints = [nowhere], Namespace = "test-ns", AgentId = AgentId };
        var e = await Assert.ThrowsAsync<BackendAiConfigException>(() => EtcdConfigStore.ConnectAsync(options, NullLogger.Instance));
        Assert.Contains(nowhere, e.Message, StringComparison.Ordinal);
    }
}
