using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using dotnet_etcd;
using KataAgent.BackendAi.Cluster;
using KataAgent.BackendAi.Hosting;
using KataAgent.BackendAi.Serialization;
using KataAgent.BackendAi.Tests.Infrastructure;
using KataAgent.Core;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace KataAgent.BackendAi.Tests.EndToEnd;

/// <summary>
/// The whole Backend.AI agent through the wire: real etcd and Redis set up as a manager leaves them, the agent host
/// joined over a real agent (containerd, runc or gVisor), and the manager's side played by CPython
/// (assets/manager_scenario.py: Callosum DEALER, Backend.AI's serializer with pickled enums and ImageRefs, the event
/// stream read from Redis and decoded with Backend.AI's unpackb).
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "xunit disposes it through IAsyncLifetime.DisposeAsync")]
public abstract class ManagerEndToEndTests(string runtimeClass, ITestOutputHelper output) : IAsyncLifetime
{
    private const string Namespace = "e2e";
    private static readonly TestNetworkPlan Plan = new("kbk", SubnetOctet: 217, PortBase: 28300, PortsPerIndex: 20, FirstIndex: 100, IndexCount: 20);

    private readonly TestAgentHost _agentHost = new("kbe", Plan);
    private readonly string _agentId = "i-e2e-" + Guid.NewGuid().ToString("N")[..8];

    public async Task InitializeAsync() =>
        await _agentHost.StartAsync(_agentHost.CommonOptions("ba-e2e-agent", "kata-agent-e2e") with
        {
            ReconcileInterval = TimeSpan.Zero,
            Resources = new ResourceOptions { TotalCpus = 64, DefaultCpus = 0.5, DefaultMemoryBytes = 512L << 20 },
        });

    public async Task DisposeAsync() => await _agentHost.DisposeAsync();

    private static string AssetsDir => Path.Combine(AppContext.BaseDirectory, "assets");

    /// <summary>The keys a manager has put before any agent joins: the Redis address and its own node key.</summary>
    private static async Task PutManagerKeysAsync(EtcdServer etcd, RedisServer redis)
    {
        using var manager = new EtcdClient(etcd.Endpoint);
        await manager.PutAsync($"/sorna/{Namespace}/config/redis/addr", redis.Address);
        await manager.PutAsync($"/sorna/{Namespace}/nodes/manager/127.0.0.1:8081", "up");
    }

    private static async Task<string?> ReadEtcdAsync(EtcdServer etcd, string key)
    {
        using var client = new EtcdClient(etcd.Endpoint);
        var response = await client.GetAsync($"/sorna/{Namespace}/{key}");
        return response.Kvs.Count == 0 ? null : response.Kvs[0].Value.ToStringUtf8();
    }

    private BackendAiOptions Options(EtcdServer etcd) => new()
    {
        Cluster = new BackendAiClusterOptions
        {
            EtcdEndpoints = [etcd.Endpoint],
            Namespace = Namespace,
            AgentId = _agentId,
            ScalingGroup = "default",
            RpcListenAddress = "127.0.0.1:0",
            HeartbeatInterval = TimeSpan.FromSeconds(2),
            StatusHeartbeatInterval = TimeSpan.FromSeconds(5),
            ManagerWaitTimeout = TimeSpan.FromSeconds(60),
        },
        RuntimeClass = runtimeClass,
    };

    /// <summary>Runs the scenario script; returns its JSON summary and the transcript.</summary>
    private async Task<(JsonElement Summary, string Transcript)> RunScenarioAsync(string endpoint, RedisServer redis)
    {
        Skip.IfNot(File.Exists(BackendAiPython.Interpreter), $"needs {BackendAiPython.Interpreter} with python3-zmq, python3-msgpack, python3-redis");
        var transcriptPath = Path.Combine(Path.GetTempPath(), $"kbe-transcript-{Guid.NewGuid():N}.txt");
        var start = new ProcessStartInfo(BackendAiPython.Interpreter,
        [
            Path.Combine(AssetsDir, "manager_scenario.py"),
            "--endpoint", endpoint,
            "--redis", redis.Address,
            "--agent-id", _agentId,
            "--image", _agentHost.ImageName,
            "--transcript", transcriptPath,
        ])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = AssetsDir,
        };
        start.Environment["PYTHONPATH"] = Path.Combine(AssetsDir, "bai") + ":" + AssetsDir;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(15));
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
        var transcript = File.Exists(transcriptPath) ? await File.ReadAllTextAsync(transcriptPath) : "";
        File.Delete(transcriptPath);
        output.WriteLine(transcript);
        var errors = await stderr;
        if (errors.Length > 0)
            output.WriteLine("stderr: " + errors);
        Assert.True(process.ExitCode == 0, $"the scenario exited {process.ExitCode}: {errors}");
        var summaryText = await stdout;
        output.WriteLine("summary: " + summaryText);
        return (JsonDocument.Parse(summaryText).RootElement.Clone(), transcript);
    }

    private static JsonElement Step(JsonElement summary, string name)
    {
        var step = summary.GetProperty("steps").GetProperty(name);
        Assert.True(step.GetProperty("ok").GetBoolean(), $"step {name}: {step}");
        return step;
    }

    private static List<string> Strings(JsonElement array) => array.EnumerateArray().Select(e => e.ToString()).ToList();

    [SkippableFact]
    public async Task A_Python_manager_creates_a_session_executes_and_destroys_it_through_the_RPC_port()
    {
        await using var redis = await RedisServer.StartNewAsync();
        await using var etcd = await EtcdServer.StartNewAsync();
        await using var reader = await EventStreamReader.ConnectAsync(redis);
        await PutManagerKeysAsync(etcd, redis);

        var host = await BackendAiAgentHost.StartAsync(_agentHost.Agent, Options(etcd), NullLoggerFactory.Instance);
        var rpcPort = 0;
        try
        {
            Assert.StartsWith("tcp://127.0.0.1:", host.RpcEndpoint, StringComparison.Ordinal);
            rpcPort = int.Parse(host.RpcEndpoint[(host.RpcEndpoint.LastIndexOf(':') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            Assert.NotEqual(0, rpcPort);
            Assert.Equal("running", await ReadEtcdAsync(etcd, $"nodes/agents/{_agentId}/"));
            Assert.Equal("127.0.0.1", await ReadEtcdAsync(etcd, $"nodes/agents/{_agentId}/ip"));

            var (summary, transcript) = await RunScenarioAsync(host.RpcEndpoint, redis);
            // KATA_E2E_TRANSCRIPT=/path keeps a copy of the runc transcript (the closing note quotes one).
            if (runtimeClass == "runc" && Environment.GetEnvironmentVariable("KATA_E2E_TRANSCRIPT") is { Length: > 0 } keep)
                await File.WriteAllTextAsync(keep, transcript + "\nsummary: " + summary + "\n");

            Step(summary, "handshake");
            Assert.Equal("hello agent", Step(summary, "ping").GetProperty("answer").GetString());
            Assert.Equal("Image already exists", Step(summary, "check_and_pull").GetProperty("event_msg").GetString());

            var created = Step(summary, "create_kernels");
            Assert.Equal(["kernel_preparing", "kernel_creating", "kernel_started"], Strings(created.GetProperty("kernel_events")));
            var infoKeys = Strings(created.GetProperty("creation_info_keys"));
            foreach (var key in new[] { "repl_in_port", "repl_out_port", "service_ports", "container_id", "resource_spec", "kernel_host" })
                Assert.Contains(key, infoKeys);
            Assert.Equal("127.0.0.1", created.GetProperty("kernel_host").GetString());
            Assert.Equal("0.5", created.GetProperty("resource_slots").GetProperty("cpu").GetString());
            var kernelId = summary.GetProperty("kernel_id").GetString()!;
            var sessionId = summary.GetProperty("session_id").GetString()!;

            var query = Step(summary, "execute_query_state");
            Assert.Equal("finished", query.GetProperty("first_status").GetString());
            Assert.Equal("42\n", query.GetProperty("second_stdout").GetString());
            Assert.Equal("hello from the manager\n", query.GetProperty("environ_stdout").GetString());

            var batch = Step(summary, "execute_batch");
            Assert.Equal(3, batch.GetProperty("exit_code").GetInt32());
            Assert.Contains("from-batch", batch.GetProperty("stdout").GetString(), StringComparison.Ordinal);

            var continued = Step(summary, "execute_continue");
            var statuses = Strings(continued.GetProperty("statuses"));
            Assert.Equal("continued", statuses[0]);
            Assert.Equal("finished", statuses[^1]);
            Assert.Equal("before\nafter\n", continued.GetProperty("stdout").GetString());

            var input = Step(summary, "execute_input");
            Assert.Equal("waiting-input", input.GetProperty("first_status").GetString());
            Assert.Equal("finished", input.GetProperty("second_status").GetString());
            Assert.Contains("hello bob", input.GetProperty("stdout").GetString(), StringComparison.Ordinal);

            var files = Step(summary, "files");
            Assert.Equal("/home/work/src", files.GetProperty("abspath").GetString());
            Assert.Equal(["data.bin", "hello.py"], Strings(files.GetProperty("listed")));
            Assert.Equal(["src/data.bin", "src/hello.py"], Strings(files.GetProperty("tar_members")));
            Assert.True(files.GetProperty("tar_hello_matches").GetBoolean());
            Assert.Equal([0, 1, 2, 255], files.GetProperty("single").EnumerateArray().Select(e => e.GetInt32()));
            Assert.Equal("uploaded\n", files.GetProperty("ran_upload").GetString());

            Assert.Equal("str", Step(summary, "get_logs").GetProperty("logs_type").GetString());

            var terminated = Strings(Step(summary, "destroy_kernel").GetProperty("terminated"));
            Assert.Equal([kernelId, sessionId, "user-requested"], terminated.Take(3));

            var sync = Step(summary, "sync_kernel_registry_unknown");
            Assert.Equal(
                [sync.GetProperty("unknown_kernel").GetString()!, sync.GetProperty("unknown_session").GetString()!, "already-terminated", "-1"],
                Strings(sync.GetProperty("terminated")));

            var heartbeat = Step(summary, "heartbeat");
            Assert.Equal(_agentId, heartbeat.GetProperty("source").GetString());
            Assert.Equal("ResourceSlot", heartbeat.GetProperty("slots_type").GetString());
            Assert.Equal(["Decimal"], Strings(heartbeat.GetProperty("slot_value_types")));
            Assert.Equal("tcp://" + host.ManagerFacingAddress, heartbeat.GetProperty("addr").GetString());
            Assert.True(summary.GetProperty("ok").GetBoolean());

            Assert.Empty(_agentHost.Agent.Sessions);
        }
        finally
        {
            await host.DisposeAsync();
        }

        var leaving = await reader.WaitForAsync(e => e.Name == "agent_terminated", "agent_terminated");
        Assert.Equal(_agentId, leaving.Source);
        Assert.Equal(new object?[] { "shutdown" }, BackendAiCodec.Instance.Unpack(leaving.Args));
        Assert.Empty(_agentHost.Agent.Sessions);
        Assert.DoesNotContain(_agentHost.Network.NetnsPrefix, await NetnsListAsync(), StringComparison.Ordinal);
        // The RPC port is released (NetMQ closes the listener on its I/O thread, so shortly after): binding it works.
        await Eventually.WaitAsync(() => CanBind(rpcPort), $"the RPC port {rpcPort} to be free", TimeSpan.FromSeconds(30));
    }

    private static bool CanBind(int port)
    {
        try
        {
            using var probe = new TcpListener(IPAddress.Loopback, port);
            probe.Start();
            probe.Stop();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private static async Task<string> NetnsListAsync()
    {
        var start = new ProcessStartInfo("ip", ["netns", "list"]) { RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(start)!;
        var text = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        return text;
    }
}

[Trait("Category", "Runtime")]
public sealed class RuncManagerEndToEndTests(ITestOutputHelper output) : ManagerEndToEndTests("runc", output);

[Trait("Category", "Runtime")]
public sealed class GvisorManagerEndToEndTests(ITestOutputHelper output) : ManagerEndToEndTests("gvisor", output);
