using System.Diagnostics;
using System.Text.Json;
using dotnet_etcd;
using KataAgent.BackendAi.Serialization;
using KataAgent.BackendAi.Tests.Infrastructure;
using KataAgent.Testing;

namespace KataAgent.Cli.Tests;

/// <summary>A CLI environment whose config has a [backendai] section pointing at a test etcd and Redis it starts.</summary>
public sealed class BackendAiCliEnvironment : CliEnvironment
{
    public const string Namespace = "cli-e2e";

    public RedisServer Redis { get; private set; } = null!;
    public EtcdServer Etcd { get; private set; } = null!;
    public string AgentId { get; } = "i-cli-" + Guid.NewGuid().ToString("N")[..8];
    public int RpcPort { get; } = ServerProcess.FreePort();

    public override async Task InitializeAsync()
    {
        Redis = await RedisServer.StartNewAsync();
        Etcd = await EtcdServer.StartNewAsync();
        using (var manager = new EtcdClient(Etcd.Endpoint))
        {
            await manager.PutAsync($"/sorna/{Namespace}/config/redis/addr", Redis.Address);
            await manager.PutAsync($"/sorna/{Namespace}/nodes/manager/127.0.0.1:8081", "up");
        }
        await base.InitializeAsync();
        await File.AppendAllTextAsync(ConfigPath, $"""

            [backendai]
            etcd_endpoints = ["{Etcd.Endpoint}"]
            namespace = "{Namespace}"
            agent_id = "{AgentId}"
            scaling_group = "default"
            rpc_listen = "127.0.0.1:{RpcPort}"
            heartbeat_interval = "1s"
            status_heartbeat_interval = "2s"
            manager_wait_timeout = "60s"

            """);
    }

    public async Task<string?> ReadEtcdAsync(string key)
    {
        using var client = new EtcdClient(Etcd.Endpoint);
        var response = await client.GetAsync($"/sorna/{Namespace}/{key}");
        return response.Kvs.Count == 0 ? null : response.Kvs[0].Value.ToStringUtf8();
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Etcd.DisposeAsync();
        await Redis.DisposeAsync();
    }
}

/// <summary>`kata-agent serve` with [backendai] joins the cluster, answers the manager's RPC and leaves on SIGTERM.</summary>
public sealed class BackendAiServeTests(BackendAiCliEnvironment env) : IClassFixture<BackendAiCliEnvironment>
{
    private static readonly IBackendAiCodec Codec = BackendAiCodec.Instance;

    [SkippableFact]
    public async Task Serve_joins_the_cluster_answers_ping_and_says_agent_terminated_on_SIGTERM()
    {
        await using var reader = await EventStreamReader.ConnectAsync(env.Redis);
        var serve = await ServeProcess.StartAsync(env);
        try
        {
            await Eventually.WaitAsync(() => env.ReadEtcdAsync($"nodes/agents/{env.AgentId}/"), v => v == "running",
                "the node key 'running'", TimeSpan.FromSeconds(90));
            Assert.Equal("127.0.0.1", await env.ReadEtcdAsync($"nodes/agents/{env.AgentId}/ip"));

            var started = await reader.WaitForAsync(e => e.Name == "agent_started", "agent_started");
            Assert.Equal(env.AgentId, started.Source);
            Assert.Equal(new object?[] { "self-started" }, Codec.Unpack(started.Args));
            var beat = await reader.WaitForAsync(e => e.Name == "agent_heartbeat", "agent_heartbeat");
            var info = Assert.IsType<Dictionary<object, object?>>(Assert.Single(Assert.IsType<object?[]>(Codec.Unpack(beat.Args))));
            Assert.Equal($"tcp://127.0.0.1:{env.RpcPort}", info["addr"]);
            Assert.IsType<ResourceSlot>(info["available_resource_slots"]);

            // The manager's side: Callosum DEALER with Backend.AI's serializer, from CPython.
            Assert.Equal("\"hello serve\"", await PythonPingAsync($"tcp://127.0.0.1:{env.RpcPort}", "hello serve"));

            // doctor beside the running agent: etcd, the manager's Redis and the RPC port (answering Callosum's PING) pass.
            var doctor = await env.RunAsync("doctor", "--json");
            Assert.True((doctor.ExitCode & 64) == 0, doctor.ToString());
            var rows = BackendAiDoctorTests.Rows(doctor.Stdout);
            Assert.True(rows["etcd"].Ok, rows["etcd"].Detail);
            Assert.True(rows["redis"].Ok, rows["redis"].Detail);
            Assert.Contains(env.Redis.Address, rows["redis"].Detail, StringComparison.Ordinal);
            Assert.True(rows["rpc port"].Ok, rows["rpc port"].Detail);
            Assert.Contains("answers PING", rows["rpc port"].Detail, StringComparison.Ordinal);
        }
        finally
        {
            Assert.Equal(0, await ServeProcess.StopAsync(serve));
        }
        var leaving = await reader.WaitForAsync(e => e.Name == "agent_terminated", "agent_terminated");
        Assert.Equal(env.AgentId, leaving.Source);
        Assert.Equal(new object?[] { "shutdown" }, Codec.Unpack(leaving.Args));
        Assert.Empty(env.Netns());
    }

    private static async Task<string> PythonPingAsync(string endpoint, string text)
    {
        Skip.IfNot(File.Exists(BackendAiPython.Interpreter), $"needs {BackendAiPython.Interpreter} with python3-zmq and python3-msgpack");
        var assets = Path.Combine(AppContext.BaseDirectory, "assets");
        var start = new ProcessStartInfo(BackendAiPython.Interpreter,
            [Path.Combine(assets, "callosum_client.py"), "--endpoint", endpoint, "--serializer", "bai", "--handshake-timeout", "30",
             "--call", "ping", "--args", JsonSerializer.Serialize(new[] { text })])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.Environment["PYTHONPATH"] = Path.Combine(assets, "bai");
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        await process.WaitForExitAsync(limit.Token);
        Assert.True(process.ExitCode == 0, $"callosum_client.py exited {process.ExitCode}: {await stderr}");
        return (await stdout).Trim();
    }
}

/// <summary>`kata-agent doctor` with [backendai] pointing at an etcd nobody serves.</summary>
public sealed class BackendAiDoctorTests(CliEnvironment env) : IClassFixture<CliEnvironment>
{
    /// <summary>`doctor --json` with the environment's config plus a [backendai] section naming this etcd and RPC port.</summary>
    private async Task<CliResult> DoctorWithBackendAiAsync(string configName, string etcdEndpoint, int rpcPort)
    {
        var config = Path.Combine(env.Dir, configName);
        await File.WriteAllTextAsync(config, await File.ReadAllTextAsync(env.ConfigPath) + $"""

            [backendai]
            etcd_endpoints = ["{etcdEndpoint}"]
            rpc_listen = "127.0.0.1:{rpcPort}"

            """);
        return await CliProcess.RunAsync(["--config", config, "doctor", "--json"]);
    }

    [Fact]
    public async Task A_dead_etcd_fails_the_backendai_rows_and_sets_exit_bit_64()
    {
        var deadEtcd = $"http://127.0.0.1:{ServerProcess.FreePort()}";
        var rpcPort = ServerProcess.FreePort();
        var result = await DoctorWithBackendAiAsync("dead-etcd.toml", deadEtcd, rpcPort);
        Assert.True((result.ExitCode & 64) != 0, result.ToString());
        var rows = Rows(result.Stdout);
        Assert.False(rows["etcd"].Ok);
        Assert.Contains(deadEtcd, rows["etcd"].Detail, StringComparison.Ordinal);
        Assert.False(rows["redis"].Ok);
        // The RPC port itself is free: that row passes, the bit comes from etcd and Redis.
        Assert.True(rows["rpc port"].Ok, rows["rpc port"].Detail);
        Assert.Contains($"127.0.0.1:{rpcPort}", rows["rpc port"].Detail, StringComparison.Ordinal);

        // Without [backendai] there are no backendai rows and bit 64 stays clear.
        var plain = await env.RunAsync("doctor", "--json");
        Assert.Equal(0, plain.ExitCode & 64);
        Assert.DoesNotContain("\"area\":\"backendai\"", plain.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_RPC_port_held_by_something_that_is_not_Callosum_fails_the_rpc_port_row()
    {
        using var squatter = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        squatter.Start();
        var port = ((System.Net.IPEndPoint)squatter.LocalEndpoint).Port;
        var result = await DoctorWithBackendAiAsync("port-taken.toml", $"http://127.0.0.1:{ServerProcess.FreePort()}", port);
        Assert.True((result.ExitCode & 64) != 0, result.ToString());
        var row = Rows(result.Stdout)["rpc port"];
        Assert.False(row.Ok, row.Detail);
        Assert.Contains($"127.0.0.1:{port} is in use by something that does not answer Callosum's PING", row.Detail, StringComparison.Ordinal);
    }

    /// <summary>The backendai rows of `doctor --json`, by name.</summary>
    internal static Dictionary<string, (bool Ok, string Detail)> Rows(string doctorJson)
    {
        using var json = JsonDocument.Parse(doctorJson);
        return json.RootElement.GetProperty("checks").EnumerateArray()
            .Where(c => c.GetProperty("area").GetString() == "backendai")
            .ToDictionary(c => c.GetProperty("name").GetString()!, c => (Ok: c.GetProperty("ok").GetBoolean(), Detail: c.GetProperty("detail").GetString()!));
    }
}
