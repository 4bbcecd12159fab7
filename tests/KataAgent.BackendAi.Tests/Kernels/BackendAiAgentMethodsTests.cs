using System.Formats.Tar;
using System.Text;
using System.Text.Json;
using KataAgent.BackendAi.Rpc;
using KataAgent.BackendAi.Serialization;
using KataAgent.Core.Sessions;
using KataAgent.Testing;

namespace KataAgent.BackendAi.Tests.Kernels;

/// <summary>
/// The Backend.AI methods against a real agent, called in-process with arguments shaped as the codec decodes the
/// manager's call (ids as str, pickled enums as <see cref="PyEnum"/>, maps keyed by str, bin as byte[]).
/// </summary>
public abstract class BackendAiAgentMethodsTests(KernelsAgentFixture fixture)
{
    private static readonly Dictionary<string, object?> NoKwargs = [];

    protected async Task<object?> CallAsync(string method, params object?[] args)
    {
        Assert.True(fixture.Methods.TryGetHandler(method, out var handler), $"method {method} is served");
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        return await handler(new RpcCall(method, args, NoKwargs), timeout.Token);
    }

    protected static PyEnum Enum(string className, string value) => new("ai.backend.common.types", className, value);

    /// <summary>A KernelCreationConfig as the Sokovan scheduler sends it (BA25), trimmed to what matters plus the enums.</summary>
    protected Dictionary<object, object?> Config(string sessionId, string kernelId, Action<Dictionary<object, object?>>? change = null)
    {
        var config = new Dictionary<object, object?>
        {
            ["image"] = new Dictionary<object, object?>
            {
                ["canonical"] = fixture.ImageName,
                ["project"] = null,
                ["architecture"] = "x86_64",
                ["digest"] = "sha256:0",
                ["repo_digest"] = null,
                ["registry"] = new Dictionary<object, object?> { ["name"] = "local", ["url"] = "http://localhost", ["username"] = null, ["password"] = null },
                ["labels"] = new Dictionary<object, object?>(),
                ["is_local"] = true,
                ["auto_pull"] = Enum("AutoPullBehavior", "digest"),
            },
            ["kernel_id"] = kernelId,
            ["session_id"] = sessionId,
            ["owner_user_id"] = Guid.NewGuid().ToString(),
            ["owner_project_id"] = null,
            ["network_id"] = sessionId,
            ["auto_pull"] = Enum("AutoPullBehavior", "digest"),
            ["session_type"] = Enum("SessionTypes", "interactive"),
            ["cluster_mode"] = Enum("ClusterMode", "single-node"),
            ["cluster_role"] = "main",
            ["cluster_idx"] = 1L,
            ["cluster_hostname"] = "main1",
            ["local_rank"] = 0L,
            ["uid"] = null,
            ["main_gid"] = null,
            ["supplementary_gids"] = System.Array.Empty<object?>(),
            ["resource_slots"] = new Dictionary<object, object?> { ["cpu"] = "0.5", ["mem"] = "536870912" },
            ["resource_opts"] = new Dictionary<object, object?>(),
            ["environ"] = new Dictionary<object, object?> { ["BACKENDAI_SESSION_ID"] = sessionId, ["GREETING"] = "hello from the manager" },
            ["mounts"] = System.Array.Empty<object?>(),
            ["package_directory"] = System.Array.Empty<object?>(),
            ["idle_timeout"] = 600L,
            ["bootstrap_script"] = null,
            ["startup_command"] = null,
            ["internal_data"] = null,
            ["preopen_ports"] = System.Array.Empty<object?>(),
            ["allocated_host_ports"] = System.Array.Empty<object?>(),
            ["scaling_group"] = "default",
            ["agent_addr"] = "tcp://127.0.0.1:6001",
            ["endpoint_id"] = null,
        };
        change?.Invoke(config);
        return config;
    }

    protected static Dictionary<object, object?> ClusterInfo() => new()
    {
        ["mode"] = Enum("ClusterMode", "single-node"),
        ["size"] = 1L,
        ["replicas"] = new Dictionary<object, object?> { ["main"] = 1L },
        ["network_config"] = new Dictionary<object, object?>(),
        ["ssh_keypair"] = null,
        ["cluster_ssh_port_mapping"] = null,
    };

    protected async Task<(string SessionId, string KernelId, Dictionary<object, object?> Info)> CreateAsync(
        Action<Dictionary<object, object?>>? change = null)
    {
        var sessionId = Guid.NewGuid().ToString();
        var kernelId = Guid.NewGuid().ToString();
        var imageRefs = new Dictionary<object, object?>
        {
            [Guid.Parse(kernelId)] = new PyImageRef(fixture.ImageName, "", "latest", "local", "x86_64", true),
        };
        var result = await CallAsync("create_kernels", sessionId, new object?[] { kernelId },
            new object?[] { Config(sessionId, kernelId, change) }, ClusterInfo(), imageRefs);
        var info = Assert.IsType<Dictionary<object, object?>>(Assert.Single(Assert.IsType<object?[]>(result)));
        return (sessionId, kernelId, info);
    }

    protected Task DestroyAsync(string sessionId, string kernelId) =>
        CallAsync("destroy_kernel", kernelId, sessionId, "user-requested", false);

    protected async Task<Dictionary<object, object?>> ExecuteAsync(string sessionId, string kernelId, string runId, string mode, string code,
        Dictionary<object, object?>? opts = null, object? flushTimeout = null, long apiVersion = 4) =>
        Assert.IsType<Dictionary<object, object?>>(await CallAsync("execute", sessionId, kernelId, apiVersion, runId, mode, code, opts ?? [], flushTimeout));

    protected static string Stdout(Dictionary<object, object?> result) => string.Concat(
        Assert.IsType<object?[]>(result["console"]).Cast<object?[]>().Where(c => (string?)c[0] == "stdout").Select(c => (string?)c[1]));

    [SkippableFact]
    public async Task CreateKernels_RunsASessionAndReportsCreationInfo_DestroyKernelAnnouncesTheEnd()
    {
        var (sessionId, kernelId, info) = await CreateAsync();
        try
        {
            var session = fixture.Agent.GetSession(kernelId);
            Assert.Equal(SessionState.Running, session.State);
            Assert.Equal(fixture.RuntimeClass, session.Record.RuntimeClass);
            Assert.Equal(sessionId, session.Record.SessionId);
            Assert.Equal(0.5, session.Record.Cpus);
            Assert.Equal(512L << 20, session.Record.MemoryBytes);

            Assert.Equal(kernelId, info["id"]);
            Assert.Equal(kernelId, info["container_id"]);
            Assert.Equal((long)session.Record.ReplInPort, info["repl_in_port"]);
            Assert.Equal((long)session.Record.ReplOutPort, info["repl_out_port"]);
            Assert.Equal("127.0.0.1", info["kernel_host"]);
            Assert.Equal("tcp://127.0.0.1:6001", info["agent_addr"]);
            Assert.Equal("default", info["scaling_group"]);
            var spec = Assert.IsType<Dictionary<object, object?>>(info["resource_spec"]);
            var slots = Assert.IsType<Dictionary<object, object?>>(spec["slots"]);
            Assert.Equal("0.5", slots["cpu"]);
            Assert.Equal("536870912", slots["mem"]);
            var allocations = Assert.IsType<Dictionary<object, object?>>(spec["allocations"]);
            var cpuShares = Assert.IsType<Dictionary<object, object?>>(Assert.IsType<Dictionary<object, object?>>(allocations["cpu"])["cpu"]);
            Assert.Equal(0.5m, cpuShares.Values.Sum(v => decimal.Parse((string)v!, System.Globalization.CultureInfo.InvariantCulture)));
            Assert.IsType<object?[]>(info["service_ports"]);

            // The manager learns of the kernel from the events, not the return value.
            var names = fixture.Events.About(kernelId).Select(e => e.Name).ToList();
            Assert.Equal(["kernel_preparing", "kernel_creating", "kernel_started"], names);
            var started = fixture.Events.About(kernelId)[2].Args;
            Assert.Equal(sessionId, started[1]);
            Assert.Same(info, started[3]);

            // The manager's environ reaches the kernel.
            var greeting = await ExecuteAsync(sessionId, kernelId, "env", "query", "import os; print(os.environ['GREETING'])", flushTimeout: null);
            Assert.Equal("hello from the manager\n", Stdout(greeting));
        }
        finally
        {
            await DestroyAsync(sessionId, kernelId);
        }
        var terminated = await fixture.Events.WaitForAsync("kernel_terminated", kernelId);
        Assert.Equal([kernelId, sessionId, "user-requested"], terminated.Args.Take(3));
        Assert.IsType<long>(terminated.Args[3]);
        Assert.DoesNotContain(fixture.Agent.Sessions, s => s.KernelId == kernelId);
        // Announced once: Core's own "destroyed" event does not make KernelEvents announce it again.
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.Single(fixture.Events.About(kernelId), e => e.Name == "kernel_terminated");
    }

    [SkippableFact]
    public async Task Execute_QueryKeepsState_BatchContinueAndInput()
    {
        var (sessionId, kernelId, _) = await CreateAsync();
        try
        {
            var first = await ExecuteAsync(sessionId, kernelId, "q1", "query", "x = 41\nprint('set', flush=True)", flushTimeout: 2.0);
            Assert.Equal("finished", first["status"]);
            Assert.Equal([], Assert.IsType<object?[]>(first["files"]));
            var second = await ExecuteAsync(sessionId, kernelId, "q2", "query", "print(x + 1)", flushTimeout: 2.0);
            Assert.Equal("finished", second["status"]);
            Assert.Equal("42\n", Stdout(second));
            Assert.Equal("q2", second["runId"]);
            Assert.Contains(fixture.Events.About(sessionId), e => e.Name == "execution_started");
            Assert.Contains(fixture.Events.About(sessionId), e => e.Name == "execution_finished");

            // Adjacent stdout chunks come back as one console entry.
            var merged = await ExecuteAsync(sessionId, kernelId, "q3", "query",
                "import sys\nfor i in range(3):\n    print(i, flush=True)\nsys.stderr.write('oops\\n')", flushTimeout: null);
            var console = Assert.IsType<object?[]>(merged["console"]).Cast<object?[]>().ToList();
            Assert.Equal(new object?[] { "stdout", "0\n1\n2\n" }, console[0]);
            Assert.Equal(new object?[] { "stderr", "oops\n" }, console[1]);

            // api_version 1: stdout/stderr strings.
            var v1 = await ExecuteAsync(sessionId, kernelId, "q4", "query", "print('old')", flushTimeout: null, apiVersion: 1);
            Assert.Equal("old\n", v1["stdout"]);
            Assert.Equal("", v1["stderr"]);
            Assert.False(v1.ContainsKey("console"));

            // Batch steps each report their end (clean-finished, build-finished); continue goes on to the exec's.
            var batch = await ExecuteAsync(sessionId, kernelId, "b1", "batch", "",
                new Dictionary<object, object?> { ["exec"] = "echo from-batch; exit 3" }, flushTimeout: null);
            var batchOutput = Stdout(batch);
            for (var step = 0; step < 3 && (string)batch["status"]! != "finished"; step++)
            {
                Assert.Contains((string)batch["status"]!, new[] { "clean-finished", "build-finished" });
                batch = await ExecuteAsync(sessionId, kernelId, "b1", "continue", "", flushTimeout: null);
                batchOutput += Stdout(batch);
            }
            Assert.Equal("finished", batch["status"]);
            Assert.Equal(3L, batch["exitCode"]);
            Assert.Contains("from-batch", batchOutput, StringComparison.Ordinal);

            // The flush timeout passes before the run ends: continued, then continue collects the rest.
            var slow = await ExecuteAsync(sessionId, kernelId, "c1", "query",
                "import time\nprint('before', flush=True)\ntime.sleep(4)\nprint('after')", flushTimeout: 0.5);
            Assert.Equal("continued", slow["status"]);
            var rest = await Eventually.WaitAsync(async () =>
            {
                var more = await ExecuteAsync(sessionId, kernelId, "c1", "continue", "", flushTimeout: 2.0);
                return (Status: (string)more["status"]!, Text: Stdout(more));
            }, r => r.Status == "finished" || r.Text.Contains("after", StringComparison.Ordinal), "the slow run's end", TimeSpan.FromMinutes(1));
            Assert.Contains("after", Stdout(slow) + rest.Text, StringComparison.Ordinal);

            var asking = await ExecuteAsync(sessionId, kernelId, "i1", "query", "name = input('who? ')\nprint('hello', name)", flushTimeout: 10.0);
            Assert.Equal("waiting-input", asking["status"]);
            var answered = await ExecuteAsync(sessionId, kernelId, "i1", "input", "bob", flushTimeout: 10.0);
            Assert.Equal("finished", answered["status"]);
            Assert.Contains("hello bob", Stdout(answered), StringComparison.Ordinal);

            var bad = await Assert.ThrowsAsync<BackendAiRpcException>(() => ExecuteAsync(sessionId, kernelId, "x", "shell", "ls"));
            Assert.Equal("InvalidArgument", bad.PythonName);
            Assert.Contains("shell", bad.Message, StringComparison.Ordinal);
        }
        finally
        {
            await DestroyAsync(sessionId, kernelId);
        }
    }

    [SkippableFact]
    public async Task Files_UploadListDownloadAndLogs()
    {
        var (sessionId, kernelId, _) = await CreateAsync();
        try
        {
            var content = Encoding.UTF8.GetBytes("print('uploaded')\n");
            Assert.Null(await CallAsync("upload_file", kernelId, "src/hello.py", content));
            Assert.Null(await CallAsync("upload_file", kernelId, "/home/work/src/data.bin", new byte[] { 0, 1, 2, 255 }));

            // The kernel sees the upload where Backend.AI puts it.
            var run = await ExecuteAsync(sessionId, kernelId, "f1", "query", "exec(open('/home/work/src/hello.py').read())", flushTimeout: null);
            Assert.Equal("uploaded\n", Stdout(run));

            var listing = Assert.IsType<Dictionary<object, object?>>(await CallAsync("list_files", kernelId, "src"));
            Assert.Equal("/home/work/src", listing["abspath"]);
            Assert.Equal("", listing["errors"]);
            using (var files = JsonDocument.Parse((string)listing["files"]!))
            {
                var entries = files.RootElement.EnumerateArray().ToDictionary(e => e.GetProperty("filename").GetString()!);
                Assert.Equal(["data.bin", "hello.py"], entries.Keys.Order());
                Assert.Equal(content.Length, entries["hello.py"].GetProperty("size").GetInt64());
                Assert.StartsWith("-rw", entries["hello.py"].GetProperty("mode").GetString(), StringComparison.Ordinal);
                Assert.True(entries["hello.py"].GetProperty("mtime").GetDouble() > 1_600_000_000);
            }

            var single = Assert.IsType<byte[]>(await CallAsync("download_single", kernelId, "src/data.bin"));
            Assert.Equal(new byte[] { 0, 1, 2, 255 }, single);

            var fileTar = ReadTar(Assert.IsType<byte[]>(await CallAsync("download_file", kernelId, "src/hello.py")));
            Assert.Equal(content, Assert.Single(fileTar, e => e.Key == "hello.py").Value);

            var dirTar = ReadTar(Assert.IsType<byte[]>(await CallAsync("download_file", kernelId, "/home/work/src")));
            Assert.Equal(content, dirTar["src/hello.py"]);
            Assert.Equal(new byte[] { 0, 1, 2, 255 }, dirTar["src/data.bin"]);

            var missing = await Assert.ThrowsAsync<BackendAiRpcException>(() => CallAsync("download_single", kernelId, "src/nope"));
            Assert.Equal("FileNotFoundError", missing.PythonName);
            var outside = await Assert.ThrowsAsync<BackendAiRpcException>(() => CallAsync("upload_file", kernelId, "/etc/passwd", content));
            Assert.Equal("PermissionError", outside.PythonName);

            var logs = Assert.IsType<Dictionary<object, object?>>(await CallAsync("get_logs", kernelId));
            Assert.IsType<string>(logs["logs"]);
        }
        finally
        {
            await DestroyAsync(sessionId, kernelId);
        }
    }

    /// <summary>Entry name → data (directories with null), read back with .NET's own tar reader.</summary>
    private static Dictionary<string, byte[]?> ReadTar(byte[] tar)
    {
        var entries = new Dictionary<string, byte[]?>();
        using var reader = new TarReader(new MemoryStream(tar));
        while (reader.GetNextEntry() is { } entry)
        {
            byte[]? data = null;
            if (entry.DataStream is { } stream)
            {
                using var copy = new MemoryStream();
                stream.CopyTo(copy);
                data = copy.ToArray();
            }
            entries[entry.Name.TrimEnd('/')] = data;
        }
        return entries;
    }

    [SkippableFact]
    public async Task SyncKernelRegistry_AnnouncesUnknownKernelsAndDestroysTheOnesTheManagerLacks()
    {
        var (sessionId, kernelId, _) = await CreateAsync();
        var (extraSessionId, extraKernelId, _) = await CreateAsync();
        try
        {
            var unknownKernel = Guid.NewGuid().ToString();
            var unknownSession = Guid.NewGuid().ToString();
            // Other fixtures' sessions do not exist here: the agent's only sessions are these two.
            Assert.Null(await CallAsync("sync_kernel_registry", (object?)new object?[]
            {
                new object?[] { kernelId, sessionId },
                new object?[] { unknownKernel, unknownSession },
            }));
            var gone = await fixture.Events.WaitForAsync("kernel_terminated", unknownKernel);
            Assert.Equal([unknownKernel, unknownSession, "already-terminated", -1L], gone.Args);
            var extra = await fixture.Events.WaitForAsync("kernel_terminated", extraKernelId);
            Assert.Equal([extraKernelId, extraSessionId, "not-found-in-manager"], extra.Args.Take(3));
            Assert.DoesNotContain(fixture.Agent.Sessions, s => s.KernelId == extraKernelId);
            Assert.Contains(fixture.Agent.Sessions, s => s.KernelId == kernelId);
        }
        finally
        {
            await DestroyAsync(sessionId, kernelId);
            await DestroyAsync(extraSessionId, extraKernelId);
        }
    }

    [SkippableFact]
    public async Task AKernelThatDiesByItself_IsCleanedUpAndAnnouncedSelfTerminated()
    {
        var (sessionId, kernelId, _) = await CreateAsync();
        try
        {
            // The kernel's task killed from outside the session (as the OOM killer would): no destroy_kernel call.
            await fixture.Agent.Containerd.Tasks.KillAsync(kernelId, 9, all: true);
            var terminated = await fixture.Events.WaitForAsync("kernel_terminated", kernelId);
            Assert.Equal([kernelId, sessionId, "self-terminated", 137L], terminated.Args);
            await Eventually.WaitAsync(() => fixture.Agent.Sessions.All(s => s.KernelId != kernelId), "the dead kernel's session cleaned up");
            Assert.Null(await fixture.Agent.Containerd.Containers.FindAsync(kernelId));
            // A late destroy_kernel from the manager is harmless and not announced twice.
            await DestroyAsync(sessionId, kernelId);
            Assert.Single(fixture.Events.About(kernelId), e => e.Name == "kernel_terminated");
        }
        finally
        {
            await DestroyAsync(sessionId, kernelId);
        }
    }

    [SkippableFact]
    public async Task CheckAndPull_APresentImageFinishesAtOnce()
    {
        var result = Assert.IsType<Dictionary<object, object?>>(await CallAsync("check_and_pull", new Dictionary<object, object?>
        {
            [fixture.ImageName] = Config(Guid.NewGuid().ToString(), Guid.NewGuid().ToString())["image"],
        }));
        var taskId = Assert.IsType<string>(result[fixture.ImageName]);
        Assert.Equal(32, taskId.Length);
        var finished = await fixture.Events.WaitForAsync("image_pull_finished", fixture.ImageName);
        Assert.Equal(fixture.ImageName, finished.Args[0]);
        Assert.Equal(fixture.Methods.AgentId, finished.Args[1]);
        Assert.IsType<double>(finished.Args[2]);
        Assert.Equal("Image already exists", finished.Args[3]);
        Assert.DoesNotContain(fixture.Events.About(fixture.ImageName), e => e.Name == "image_pull_started");
        Assert.Equal(false, await CallAsync("check_pulling", fixture.ImageName));
    }

    [SkippableFact]
    public async Task CheckAndPull_FromARegistryNobodyServes_StartsThenFails()
    {
        // A registry on a free loopback port: the connection is refused, the pull fails, Sokovan hears image_pull_failed.
        var canonical = $"127.0.0.1:{Infrastructure.ServerProcess.FreePort()}/nothing/here:1";
        var image = Config(Guid.NewGuid().ToString(), Guid.NewGuid().ToString())["image"] as Dictionary<object, object?>;
        image!["canonical"] = canonical;
        var result = Assert.IsType<Dictionary<object, object?>>(await CallAsync("check_and_pull", new Dictionary<object, object?> { [canonical] = image }));
        Assert.IsType<string>(result[canonical]);
        var started = await fixture.Events.WaitForAsync("image_pull_started", canonical);
        Assert.Equal(fixture.Methods.AgentId, started.Args[1]);
        var failed = await fixture.Events.WaitForAsync("image_pull_failed", canonical, TimeSpan.FromMinutes(3));
        Assert.Equal(fixture.Methods.AgentId, failed.Args[1]);
        Assert.Contains("127.0.0.1", Assert.IsType<string>(failed.Args[2]), StringComparison.Ordinal);
        Assert.DoesNotContain(fixture.Events.About(canonical), e => e.Name == "image_pull_finished");
        await Eventually.WaitAsync(async () => await CallAsync("check_pulling", canonical) is false, "check_pulling false after the failure");
        Assert.Null(await fixture.Agent.Containerd.Images.FindAsync(canonical));
    }

    [SkippableFact]
    public async Task BadConfigs_AreRefusedNamingTheProblem_AndLeaveNothing()
    {
        var before = fixture.Agent.Sessions.Count;

        async Task<BackendAiRpcException> RefusedAsync(Action<Dictionary<object, object?>> change)
        {
            var sessionId = Guid.NewGuid().ToString();
            var kernelId = Guid.NewGuid().ToString();
            var e = await Assert.ThrowsAsync<BackendAiRpcException>(() => CallAsync("create_kernels", sessionId, new object?[] { kernelId },
                new object?[] { Config(sessionId, kernelId, change) }, ClusterInfo(), new Dictionary<object, object?>()));
            var terminated = await fixture.Events.WaitForAsync("kernel_terminated", kernelId);
            Assert.Equal([kernelId, sessionId, "failed-to-create", -1L], terminated.Args);
            Assert.DoesNotContain(fixture.Agent.Sessions, s => s.KernelId == kernelId);
            Assert.Null(await fixture.Agent.Containerd.Containers.FindAsync(kernelId));
            return e;
        }

        var badMode = await RefusedAsync(c => c["mounts"] = new object?[] { new Dictionary<object, object?> { ["host_path"] = "/tmp", ["kernel_path"] = "/home/work/data", ["mount_perm"] = "rwx" } });
        Assert.Equal("InvalidArgument", badMode.PythonName);
        Assert.Contains("mount_perm 'rwx'", badMode.Message, StringComparison.Ordinal);

        var badMemory = await RefusedAsync(c => c["resource_slots"] = new Dictionary<object, object?> { ["cpu"] = "1", ["mem"] = "lots" });
        Assert.Equal("ValueError", badMemory.PythonName);
        Assert.Contains("'lots'", badMemory.Message, StringComparison.Ordinal);

        var noImage = await RefusedAsync(c => ((Dictionary<object, object?>)c["image"]!)["canonical"] = "registry.example/nothing:here");
        Assert.Equal("InvalidArgument", noImage.PythonName);
        Assert.Contains("registry.example/nothing:here", noImage.Message, StringComparison.Ordinal);

        // A host path outside the agent's mount allow-list: Core refuses it and rolls back.
        var notAllowed = await RefusedAsync(c => c["mounts"] = new object?[]
        {
            new Dictionary<object, object?> { ["name"] = "v", ["host_path"] = "/etc", ["kernel_path"] = "/mnt/v", ["mount_perm"] = "ro" },
        });
        Assert.True(notAllowed.Message.Contains("/etc", StringComparison.Ordinal), notAllowed.Message);

        Assert.Equal(before, fixture.Agent.Sessions.Count);
    }

    [SkippableFact]
    public async Task BatchTrigger_Interrupt_Ports_Completions_And_Services()
    {
        var (sessionId, kernelId, _) = await CreateAsync();
        try
        {
            // trigger_batch_execution answers at once; the batch's end comes as session_success / session_failure.
            Assert.Null(await CallAsync("trigger_batch_execution", sessionId, kernelId, "echo batch-ok", 60.0));
            var success = await fixture.Events.WaitForAsync("session_success", sessionId, TimeSpan.FromMinutes(2));
            Assert.Equal(0L, success.Args[2]);
            Assert.Null(await CallAsync("trigger_batch_execution", sessionId, kernelId, "exit 4", 60.0));
            var failure = await fixture.Events.WaitForAsync("session_failure", sessionId, TimeSpan.FromMinutes(2));
            Assert.Equal(4L, failure.Args[2]);
            var unknown = await Assert.ThrowsAnyAsync<Exception>(() => CallAsync("trigger_batch_execution", sessionId, Guid.NewGuid().ToString(), "true", 5.0));
            Assert.Contains("no session", unknown.Message, StringComparison.OrdinalIgnoreCase);

            // interrupt_kernel stops a long run: the run ends, the interpreter stays.
            var running = await ExecuteAsync(sessionId, kernelId, "long", "query", "import time\nprint('go', flush=True)\ntime.sleep(120)", flushTimeout: 1.0);
            Assert.Equal("continued", running["status"]);
            Assert.Equal("finished", Assert.IsType<Dictionary<object, object?>>(await CallAsync("interrupt_kernel", kernelId))["status"]);
            var ended = await ExecuteAsync(sessionId, kernelId, "long", "continue", "", flushTimeout: 30.0);
            while ((string?)ended["status"] == "continued")
                ended = await ExecuteAsync(sessionId, kernelId, "long", "continue", "", flushTimeout: 30.0);
            Assert.Equal("finished", ended["status"]);
            var stderr = string.Concat(Assert.IsType<object?[]>(ended["console"]).Cast<object?[]>().Where(c => (string?)c[0] == "stderr").Select(c => (string?)c[1]));
            Assert.Contains("KeyboardInterrupt", stderr, StringComparison.Ordinal);
            Assert.Equal("still here\n", Stdout(await ExecuteAsync(sessionId, kernelId, "after", "query", "print('still here')")));

            // assign_port / release_port: a port from the agent's pool, given back once.
            var port = Assert.IsType<long>(await CallAsync("assign_port"));
            Assert.InRange(port, fixture.Agent.Services.Ports.FirstPort, fixture.Agent.Services.Ports.LastPort);
            Assert.Contains((int)port, fixture.Agent.Services.Ports.InUse);
            Assert.Null(await CallAsync("release_port", port));
            Assert.DoesNotContain((int)port, fixture.Agent.Services.Ports.InUse);
            var twice = await Assert.ThrowsAsync<BackendAiRpcException>(() => CallAsync("release_port", port));
            Assert.Equal("ValueError", twice.PythonName);

            // get_completions: the interpreter's own completer.
            var completions = Assert.IsType<Dictionary<object, object?>>(Assert.IsType<Dictionary<object, object?>>(
                await CallAsync("get_completions", kernelId, "impo", new Dictionary<object, object?>()))["result"]);
            Assert.Equal("finished", completions["status"]);
            Assert.Contains(Assert.IsType<object?[]>(completions["suggestions"]), s => s is string text && text.StartsWith("import", StringComparison.Ordinal));

            // start_service of a name nothing defines: failed, saying so (the image has no such app); shutdown is quiet.
            var service = Assert.IsType<Dictionary<object, object?>>(await CallAsync("start_service", kernelId, "no-such-app", new Dictionary<object, object?>()));
            Assert.Equal("failed", service["status"]);
            Assert.Contains("no-such-app", (string?)service["error"] ?? "", StringComparison.Ordinal);
        }
        finally
        {
            await DestroyAsync(sessionId, kernelId);
        }
    }

    [SkippableFact]
    public async Task LocalSessions_AreLeftAlone_ByResetSyncAndTheCleanUpOfKernelsThatDie()
    {
        // A session made through the local API on the same agent, next to the manager's kernels.
        var local = await fixture.Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = fixture.RuntimeClass });
        var localId = local.KernelId;
        try
        {
            // reset_agent: the manager's kernel goes (agent-reset); the local session stays.
            var (sessionId, kernelId, _) = await CreateAsync();
            Assert.Null(await CallAsync("reset_agent"));
            var reset = await fixture.Events.WaitForAsync("kernel_terminated", kernelId);
            Assert.Equal([kernelId, sessionId, "agent-reset"], reset.Args.Take(3));
            Assert.DoesNotContain(fixture.Agent.Sessions, s => s.KernelId == kernelId);
            Assert.Contains(fixture.Agent.Sessions, s => s.KernelId == localId);

            // sync_kernel_registry listing nothing: the manager owns no kernel here, the local session is not its to destroy.
            Assert.Null(await CallAsync("sync_kernel_registry", (object?)System.Array.Empty<object?>()));
            Assert.Contains(fixture.Agent.Sessions, s => s.KernelId == localId && s.State == SessionState.Running);

            // The local session's task dies: Core keeps it exited for its user; the manager hears nothing of it.
            await fixture.Agent.Containerd.Tasks.KillAsync(localId, 9, all: true);
            await Eventually.WaitAsync(() => fixture.Agent.Sessions.Any(s => s.KernelId == localId && s.State == SessionState.Exited),
                "the local session exited");
            // A manager kernel that dies after it: once that one is announced, the local one's event was handled too.
            var (laterSessionId, laterKernelId, _) = await CreateAsync();
            await fixture.Agent.Containerd.Tasks.KillAsync(laterKernelId, 9, all: true);
            var later = await fixture.Events.WaitForAsync("kernel_terminated", laterKernelId);
            Assert.Equal([laterKernelId, laterSessionId, "self-terminated"], later.Args.Take(3));
            Assert.Contains(fixture.Agent.Sessions, s => s.KernelId == localId && s.State == SessionState.Exited);
            Assert.Empty(fixture.Events.About(localId));
        }
        finally
        {
            await fixture.Agent.DestroySessionAsync(localId);
        }
        Assert.Empty(fixture.Events.About(localId));
    }

    [SkippableFact]
    public async Task Execute_CancelledByTheManager_AnnouncesExecutionCancelled()
    {
        var (sessionId, kernelId, _) = await CreateAsync();
        try
        {
            Assert.True(fixture.Methods.TryGetHandler("execute", out var execute));
            using var cancel = new CancellationTokenSource();
            // The RPC server cancels the handler's token on Callosum's CANCEL; here the token is cancelled directly.
            var call = execute(new RpcCall("execute", [sessionId, kernelId, 4L, "slow", "query",
                "import time\nprint('started', flush=True)\ntime.sleep(600)", new Dictionary<object, object?>(), 300.0], NoKwargs), cancel.Token);
            await fixture.Events.WaitForAsync("execution_started", sessionId);
            await cancel.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.WaitAsync(TimeSpan.FromMinutes(2)));
            var events = fixture.Events.About(sessionId).Select(e => e.Name).ToList();
            Assert.Equal("execution_cancelled", events[^1]);
            Assert.DoesNotContain("execution_finished", events);
        }
        finally
        {
            await DestroyAsync(sessionId, kernelId);
        }
    }

    [SkippableFact]
    public async Task TheRemainingMethods_AnswerAsDocumented()
    {
        // Refused, not pretended (docs/BACKENDAI.md "What is not done"): NotImplementedError naming the call.
        var network = await Assert.ThrowsAsync<BackendAiRpcException>(() => CallAsync("create_local_network", "bai-net-1"));
        Assert.Equal("NotImplementedError", network.PythonName);
        Assert.Contains("create_local_network('bai-net-1')", network.Message, StringComparison.Ordinal);
        var noNetwork = await Assert.ThrowsAsync<BackendAiRpcException>(() => CallAsync("destroy_local_network", "bai-net-1"));
        Assert.Equal("NotImplementedError", noNetwork.PythonName);
        var push = await Assert.ThrowsAsync<BackendAiRpcException>(() => CallAsync("push_image", new PyImageRef(fixture.ImageName, "", "latest", "local", "x86_64", true), null));
        Assert.Equal("NotImplementedError", push.PythonName);

        // gather_hwinfo: {device: {status, status_info, metadata}} for cpu and mem.
        var hardware = Assert.IsType<Dictionary<object, object?>>(await CallAsync("gather_hwinfo"));
        Assert.Equal(["cpu", "mem"], hardware.Keys.Cast<string>().Order(StringComparer.Ordinal));
        var cpu = Assert.IsType<Dictionary<object, object?>>(hardware["cpu"]);
        Assert.Equal("healthy", cpu["status"]);
        Assert.Equal((long)Environment.ProcessorCount, Assert.IsType<Dictionary<object, object?>>(cpu["metadata"])["cores"]);
        var memory = Assert.IsType<Dictionary<object, object?>>(Assert.IsType<Dictionary<object, object?>>(hardware["mem"])["metadata"]);
        Assert.Equal(fixture.Agent.Resources.Capacity.MemoryBytes, memory["total_bytes"]);

        // get_local_config: the agent's id, scaling group and the class its sessions get.
        var local = Assert.IsType<Dictionary<object, object?>>(await CallAsync("get_local_config"));
        var agent = Assert.IsType<Dictionary<object, object?>>(local["agent"]);
        Assert.Equal(fixture.Methods.AgentId, agent["id"]);
        Assert.Equal("default", agent["scaling-group"]);

        // shutdown_agent is a no-op in Backend.AI's agent too; the agent serves on.
        Assert.Null(await CallAsync("shutdown_agent", false));
        Assert.Equal(false, await CallAsync("check_creating", Guid.NewGuid().ToString()));

        // check_creating is true while create_kernels runs for that kernel, false after.
        var sessionId = Guid.NewGuid().ToString();
        var kernelId = Guid.NewGuid().ToString();
        var creating = CallAsync("create_kernels", sessionId, new object?[] { kernelId },
            new object?[] { Config(sessionId, kernelId) }, ClusterInfo(), new Dictionary<object, object?>());
        var seenCreating = false;
        while (!creating.IsCompleted && !seenCreating)
            seenCreating = await CallAsync("check_creating", kernelId) is true;
        await creating;
        try
        {
            Assert.True(seenCreating, "check_creating never said true while create_kernels ran");
            Assert.Equal(false, await CallAsync("check_creating", kernelId));

            // restart_kernel: a new container of the same kernel; its interpreter starts over, the scratch dir stays.
            await ExecuteAsync(sessionId, kernelId, "r1", "query", "x = 1\nopen('/home/work/kept.txt', 'w').write('kept')");
            var restarted = Assert.IsType<Dictionary<object, object?>>(await CallAsync("restart_kernel", sessionId, kernelId,
                new PyImageRef(fixture.ImageName, "", "latest", "local", "x86_64", true), new Dictionary<object, object?>()));
            Assert.Equal(kernelId, restarted["container_id"]);
            var started = await Eventually.WaitAsync(
                () => fixture.Events.About(kernelId).LastOrDefault(e => e.Name == "kernel_started" && (string?)e.Args[2] == "restarting"),
                e => e.Name is not null, "kernel_started(restarting)");
            Assert.Equal(sessionId, started.Args[1]);
            Assert.Contains(fixture.Agent.Sessions, s => s.KernelId == kernelId && s.State == SessionState.Running);
            Assert.Equal("kept False\n", Stdout(await ExecuteAsync(sessionId, kernelId, "r2", "query",
                "print(open('/home/work/kept.txt').read(), 'x' in globals())")));
            Assert.DoesNotContain(fixture.Events.About(kernelId), e => e.Name == "kernel_terminated");

            // shutdown_service of a service that is not running: quiet, as Backend.AI's runner is.
            Assert.Null(await CallAsync("shutdown_service", kernelId, "no-such-app"));

            // commit to a file is refused; commit to an image runs in the background, get_commit_status follows it.
            var toFile = await Assert.ThrowsAsync<BackendAiRpcException>(() => CallAsync("commit", kernelId, "user@example.com", null, "out.tar"));
            Assert.Equal("NotImplementedError", toFile.PythonName);
            var imageName = $"docker.io/library/kbk-commit-{Guid.NewGuid():N}:latest";
            try
            {
                var commit = Assert.IsType<Dictionary<object, object?>>(await CallAsync("commit", kernelId, "user@example.com", imageName));
                Assert.Equal(kernelId, commit["kernel"]);
                Assert.Equal(32, Assert.IsType<string>(commit["bgtask_id"]).Length);
                await Eventually.WaitAsync(async () => await fixture.Agent.Containerd.Images.FindAsync(imageName) is not null,
                    $"the committed image {imageName}", TimeSpan.FromMinutes(3));
                await fixture.Methods.WhenIdleAsync();
                var status = Assert.IsType<Dictionary<object, object?>>(await CallAsync("get_commit_status", kernelId, "user@example.com"));
                Assert.Equal(kernelId, status["kernel"]);
                Assert.Equal("clean", status["status"]);
            }
            finally
            {
                await fixture.Methods.WhenIdleAsync();
                if (await fixture.Agent.Containerd.Images.FindAsync(imageName) is not null)
                    await fixture.Agent.Containerd.Images.DeleteAsync(imageName, sync: true);
            }
        }
        finally
        {
            await DestroyAsync(sessionId, kernelId);
        }
    }
}

[Trait("Category", "Runtime")]
public sealed class RuncBackendAiAgentMethodsTests(RuncKernelsAgentFixture fixture)
    : BackendAiAgentMethodsTests(fixture), IClassFixture<RuncKernelsAgentFixture>
{
    /// <summary>An image in a local docker-registry that this agent does not hold (runc only: pulling does not depend on the runtime).</summary>
    private async Task<string> PushToAsync(LocalRegistry registry)
    {
        var canonical = $"{registry.Host}/ba-test/python:1";
        using var client = new KataAgent.Images.Registry.RegistryClient();
        await new KataAgent.Images.Registry.ImagePusher(fixture.Agent.Containerd, client).PushAsync(fixture.ImageName, canonical);
        Assert.Null(await fixture.Agent.Containerd.Images.FindAsync(canonical));
        return canonical;
    }

    private static Action<Dictionary<object, object?>> FromRegistry(string canonical, string autoPull) => config =>
    {
        var image = (Dictionary<object, object?>)config["image"]!;
        image["canonical"] = canonical;
        image["is_local"] = false;
        config["auto_pull"] = image["auto_pull"] = Enum("AutoPullBehavior", autoPull);
    };

    [SkippableFact]
    public async Task CreateKernels_PullsAMissingImageFirst_AndAutoPullNoneRefusesIt()
    {
        await using var registry = await LocalRegistry.StartAsync();
        var canonical = await PushToAsync(registry);

        // auto_pull none: refused naming the image, as BA25's ImageNotAvailable; nothing pulled, nothing left.
        var refusedSession = Guid.NewGuid().ToString();
        var refusedKernel = Guid.NewGuid().ToString();
        var refused = await Assert.ThrowsAsync<BackendAiRpcException>(() => CallAsync("create_kernels", refusedSession, new object?[] { refusedKernel },
            new object?[] { Config(refusedSession, refusedKernel, FromRegistry(canonical, "none")) }, ClusterInfo(), new Dictionary<object, object?>()));
        Assert.Equal("ImageNotAvailable", refused.PythonName);
        Assert.Contains(canonical, refused.Message, StringComparison.Ordinal);
        Assert.Equal([refusedKernel, refusedSession, "failed-to-create", -1L], (await fixture.Events.WaitForAsync("kernel_terminated", refusedKernel)).Args);
        Assert.DoesNotContain(fixture.Events.About(refusedKernel), e => e.Name is "kernel_pulling" or "kernel_creating");
        Assert.Null(await fixture.Agent.Containerd.Images.FindAsync(canonical));

        // auto_pull digest: kernel_pulling (the canonical as its reason) between preparing and creating, then a session of the pulled image.
        var (sessionId, kernelId, _) = await CreateAsync(FromRegistry(canonical, "digest"));
        try
        {
            var events = fixture.Events.About(kernelId);
            Assert.Equal(["kernel_preparing", "kernel_pulling", "kernel_creating", "kernel_started"], events.Select(e => e.Name).Take(4));
            var pulling = events.Single(e => e.Name == "kernel_pulling");
            Assert.Equal([kernelId, sessionId, canonical], pulling.Args.Take(3));
            Assert.NotNull(await fixture.Agent.Containerd.Images.FindAsync(canonical));
            Assert.Equal(canonical, fixture.Agent.GetSession(kernelId).Record.Image);
            Assert.Equal("42\n", Stdout(await ExecuteAsync(sessionId, kernelId, "r1", "query", "print(6*7)")));
        }
        finally
        {
            await DestroyAsync(sessionId, kernelId);
            await fixture.Agent.Containerd.Images.DeleteAsync(canonical, sync: true);
        }
    }
}

[Trait("Category", "Runtime")]
public sealed class GvisorBackendAiAgentMethodsTests(GvisorKernelsAgentFixture fixture)
    : BackendAiAgentMethodsTests(fixture), IClassFixture<GvisorKernelsAgentFixture>;
