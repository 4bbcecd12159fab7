using KataAgent.Core.Sessions;
using KataAgent.Images;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Core.Tests;

public sealed class RuncImageAgentFixture : AgentFixture;
public sealed class GvisorImageAgentFixture : AgentFixture;

/// <summary>Sessions from images derived from the python base image (<see cref="DerivedImages"/>): labels and files steer the session.</summary>
public abstract class ImageSessionTestsBase(AgentFixture fixture, string runtime)
{
    protected AgentFixture Fixture { get; } = fixture;
    protected Agent Agent => Fixture.Agent;
    protected string Runtime { get; } = runtime;

    protected static string UniqueName(string what) => $"kata-agent-test/{what}:{Guid.NewGuid().ToString("N")[..8]}";

    protected Task<ImportedImage> ImportAsync(DerivedImageSpec spec) => DerivedImages.ImportAsync(Agent.Containerd, spec);

    protected Task<Session> CreateAsync(SessionRequest request) => Agent.CreateSessionAsync(request with { RuntimeClass = Runtime });

    protected async Task<ExecutionResult> QueryAsync(Session session, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var runId = "run-" + Guid.NewGuid().ToString("N")[..6];
        var options = new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) };
        var result = await CollectAsync(Agent.ExecuteAsync(session.KernelId, runId, ExecutionMode.Query, code, options, timeout.Token));
        var console = result.Console.ToList();
        while (result.Status is ExecutionStatus.Continued)
        {
            result = await CollectAsync(Agent.ExecuteAsync(session.KernelId, runId, ExecutionMode.Continue, "", options, timeout.Token));
            console.AddRange(result.Console);
        }
        return result with { Console = console };
    }

    private static Task<ExecutionResult> CollectAsync(IAsyncEnumerable<ExecutionEvent> events) => RunEvents.CollectAsync(events);

    protected static string Out(ExecutionResult r, string kind = "stdout") => RunEvents.Out(r, kind);

    [Fact]
    public async Task A_derived_image_carries_its_files_and_labels_into_the_session()
    {
        var name = UniqueName("derived");
        var imported = await ImportAsync(new DerivedImageSpec
        {
            Name = name,
            Files = new Dictionary<string, DerivedFile>
            {
                ["/etc/backend.ai/service-defs/web.json"] = DerivedFile.Text("""{"command": ["true"]}"""),
                ["/opt/test/runner.py"] = DerivedFile.Executable("print('from the layer')\n"),
            },
            Labels = new Dictionary<string, string?> { ["io.kata-agent.test"] = "derived", ["ai.backend.features"] = "query" },
            Env = ["KATA_DERIVED=yes"],
        });
        Assert.Equal(name, imported.Name);

        var details = await new ImageInspector(Agent.Containerd).InspectAsync(name);
        Assert.Equal("derived", details.Labels["io.kata-agent.test"]);
        Assert.Equal("query", details.Labels["ai.backend.features"]);
        // The base image's labels stay unless overridden.
        Assert.Equal("python", details.Labels["ai.backend.runtime-type"]);
        Assert.Contains("KATA_DERIVED=yes", details.Config.Config!.Env!);

        var session = await CreateAsync(new SessionRequest { Image = name });
        try
        {
            var result = await QueryAsync(session, """
                import os, stat, subprocess
                print(open('/etc/backend.ai/service-defs/web.json').read())
                print(oct(stat.S_IMODE(os.stat('/opt/test/runner.py').st_mode)))
                print(subprocess.run(['python3', '/opt/test/runner.py'], capture_output=True, text=True).stdout.strip())
                """);
            Assert.True(result.ExitCode == 0, result.ToJson());
            var lines = Out(result).Split('\n');
            Assert.Equal("""{"command": ["true"]}""", lines[0]);
            Assert.Equal("0o755", lines[1]);
            Assert.Equal("from the layer", lines[2]);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_create_below_the_images_minimum_is_refused_naming_the_label_and_leaves_nothing()
    {
        var name = UniqueName("minimum");
        await ImportAsync(new DerivedImageSpec
        {
            Name = name,
            Labels = new Dictionary<string, string?>
            {
                [ImageLabels.MinMemory] = "1g",
                [ImageLabels.MinCpu] = "2",
                // An accelerator this agent does not have: ignored, not an error.
                ["ai.backend.resource.min.cuda.device"] = "1",
            },
        });
        var ports = Agent.Services.Ports.InUse.ToList();

        // The fixture's default memory (512 MiB) and CPU (0.5) are both below.
        var byDefault = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(new SessionRequest { Image = name }));
        Assert.Contains("ai.backend.resource.min.mem=1g", byDefault.Message, StringComparison.Ordinal);
        Assert.Contains("1073741824 bytes", byDefault.Message, StringComparison.Ordinal);
        Assert.Contains("536870912 bytes", byDefault.Message, StringComparison.Ordinal);
        Assert.Contains("ai.backend.resource.min.cpu=2", byDefault.Message, StringComparison.Ordinal);
        Assert.Contains("would get the default 0.5", byDefault.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("cuda", byDefault.Message, StringComparison.Ordinal);

        // Enough memory, too few CPUs: only the CPU is named.
        var asked = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(new SessionRequest { Image = name, Cpus = 1.5, MemoryBytes = 2L << 30 }));
        Assert.Contains("ai.backend.resource.min.cpu=2 needs at least 2 CPUs, the session asks for 1.5", asked.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(ImageLabels.MinMemory, asked.Message, StringComparison.Ordinal);

        // A bad minimum is the image's fault, named as such.
        var bad = UniqueName("bad-minimum");
        await ImportAsync(new DerivedImageSpec { Name = bad, Labels = new Dictionary<string, string?> { [ImageLabels.MinMemory] = "lots" } });
        var badLabel = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(new SessionRequest { Image = bad }));
        Assert.Contains($"image '{bad}' has a bad label: ai.backend.resource.min.mem: 'lots' is not a size", badLabel.Message, StringComparison.Ordinal);

        Assert.Equal(ports, Agent.Services.Ports.InUse.ToList());
        Assert.Empty(Agent.Sessions);
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task Core_count_labels_fill_the_environment_and_bootstrap_lands_in_the_work_dir()
    {
        var name = UniqueName("corecount");
        await ImportAsync(new DerivedImageSpec
        {
            Name = name,
            Labels = new Dictionary<string, string?>
            {
                [ImageLabels.EnvsCoreCount] = "OMP_NUM_THREADS,MY_CORES",
                // Exactly the minimum is enough.
                [ImageLabels.MinCpu] = "1.5",
                [ImageLabels.MinMemory] = "256m",
            },
        });
        var session = await CreateAsync(new SessionRequest
        {
            Image = name,
            Cpus = 1.5,
            MemoryBytes = 256L << 20,
            // The request's own value wins over the core count.
            Environment = new Dictionary<string, string> { ["MY_CORES"] = "7", ["GREETING"] = "hi there" },
            BootstrapScript = "#!/bin/sh\necho booted > /home/work/booted\n",
        });
        try
        {
            // On the host: bootstrap.sh in the work dir, the guest user's (root here), 0700; none in the config dir.
            var work = Path.Combine(session.Record.ScratchDir, "work");
            var config = Path.Combine(session.Record.ScratchDir, "config");
            Assert.Equal((UnixFileMode)0x1C0, File.GetUnixFileMode(Path.Combine(work, "bootstrap.sh")));
            Assert.False(File.Exists(Path.Combine(config, "bootstrap.sh")));

            var result = await QueryAsync(session, """
                import os, stat
                st = os.stat('/home/work/bootstrap.sh')
                print(oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid)
                print(open('/home/work/bootstrap.sh').read().splitlines()[1])
                print(repr(open('/home/config/environ.txt').read()))
                env = dict(e.split('=', 1) for e in open('/proc/1/environ').read().split('\0') if '=' in e)
                print(env.get('OMP_NUM_THREADS'), env.get('MY_CORES'), env.get('GREETING'))
                """);
            Assert.True(result.ExitCode == 0, result.ToJson());
            var lines = Out(result).Split('\n');
            Assert.Equal("0o700 0 0", lines[0]);
            Assert.Equal("echo booted > /home/work/booted", lines[1]);
            // KEY=VALUE lines only: no blank line, no comment; the core count is the CPU share rounded up.
            Assert.Equal("'GREETING=hi there\\nMY_CORES=7\\nOMP_NUM_THREADS=2\\n'", lines[2]);
            // The container's own environment has them too (an image's runner may not read environ.txt).
            Assert.Equal("2 7 hi there", lines[3]);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Runtime_labels_choose_the_interpreter_and_a_runtime_without_one_has_no_query_mode()
    {
        var pinned = UniqueName("runtime-path");
        await ImportAsync(new DerivedImageSpec { Name = pinned, Labels = new Dictionary<string, string?> { [ImageLabels.RuntimePath] = "/usr/bin/python3.11" } });
        var noInterpreter = UniqueName("runtime-type");
        await ImportAsync(new DerivedImageSpec { Name = noInterpreter, Labels = new Dictionary<string, string?> { [ImageLabels.RuntimeType] = "app" } });

        var session = await CreateAsync(new SessionRequest { Image = pinned });
        try
        {
            // The base image's own label says /usr/bin/python3; the derived image's runtime-path wins.
            var result = await QueryAsync(session, "import sys\nprint(sys.executable)");
            Assert.True(result.ExitCode == 0, result.ToJson());
            Assert.Equal("/usr/bin/python3.11\n", Out(result));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }

        var app = await CreateAsync(new SessionRequest { Image = noInterpreter });
        try
        {
            var query = await QueryAsync(app, "print('never')");
            Assert.Equal(127, query.ExitCode);
            Assert.Contains("query mode is not available for runtime type 'app'", Out(query, "stderr"), StringComparison.Ordinal);
            Assert.Equal("", Out(query));

            // Batch commands still run: the runtime type takes the interpreter away, not the shell.
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            var options = new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30), Exec = "echo from the shell" };
            var batch = await CollectAsync(Agent.ExecuteAsync(app.KernelId, "batch-1", ExecutionMode.Batch, "", options, timeout.Token));
            var console = batch.Console.ToList();
            while (batch.Status is ExecutionStatus.Continued or ExecutionStatus.CleanFinished or ExecutionStatus.BuildFinished)
            {
                batch = await CollectAsync(Agent.ExecuteAsync(app.KernelId, "batch-1", ExecutionMode.Continue, "", options, timeout.Token));
                console.AddRange(batch.Console);
            }
            Assert.True(batch.Status == ExecutionStatus.Finished && batch.ExitCode == 0, batch.ToJson());
            Assert.Equal("from the shell\n", Out(batch with { Console = console }));
        }
        finally
        {
            await Agent.DestroySessionAsync(app.KernelId);
        }
    }

    private static DerivedImageSpec RunnerImage(string name, IReadOnlyDictionary<string, string?> labels) => new()
    {
        Name = name,
        Files = new Dictionary<string, DerivedFile> { ["/opt/test/runner.py"] = DerivedFile.Executable(TestAssets.ReadText(TestAssets.ZmtpNullRunner)) },
        Labels = labels,
    };

    [Fact]
    public async Task An_images_own_runner_from_its_label_is_driven_without_curve_and_survives_a_restart_and_recovery()
    {
        var name = UniqueName("own-runner");
        await ImportAsync(RunnerImage(name, new Dictionary<string, string?>
        {
            [ImageLabels.RunnerCommand] = "python3 -u /opt/test/runner.py python '/usr/bin/python3'",
            [ImageLabels.Features] = "query uid-match",
            // A declared service port makes the create ask get-apps, which this runner leaves unanswered.
            [ServicePortLabel.LabelName] = "web:http:8080",
        }));
        var session = await CreateAsync(new SessionRequest { Image = name });
        try
        {
            Assert.Equal(["python3", "-u", "/opt/test/runner.py", "python", "/usr/bin/python3"], session.Record.RunnerCommand!);
            Assert.Null(session.Record.RunnerCurve);
            Assert.Equal(["query", "uid-match"], session.Record.Features!);
            // get-apps went unanswered: the port keeps what the label declares.
            var web = Assert.Single(session.Record.ServicePorts);
            Assert.Equal(("web", "http", (int?)8080, (string?)null), (web.Name, web.Protocol, (int?)web.ContainerPorts.Single(), web.UrlTemplate));
            var config = Path.Combine(session.Record.ScratchDir, "config");
            Assert.False(File.Exists(Path.Combine(config, "runner-curve.json")), "an image's own runner gets no CURVE keys");
            Assert.All(session.Record.Ports.Where(p => p.Name is "replin" or "replout"), p => Assert.Equal("127.0.0.1", p.HostIp));

            var status = await session.Runner.GetStatusAsync();
            Assert.IsType<double>(status["started_at"]);
            var first = await QueryAsync(session, "x = 20\nprint(x + 1)");
            Assert.True(first.Status == ExecutionStatus.Finished && first.ExitCode == 0, first.ToJson());
            Assert.Equal("21\n", Out(first));
            // The runner's log lines between runs (as Backend.AI's runner sends them) stay out of every run.
            Assert.Equal("", Out(first, "stderr"));
            Assert.Equal("22\n", Out(await QueryAsync(session, "print(x + 2)")));
            var error = await QueryAsync(session, "1/0");
            Assert.Equal(1, error.ExitCode);
            Assert.Contains("ZeroDivisionError", Out(error, "stderr"), StringComparison.Ordinal);
            Assert.DoesNotContain("ai.backend.kernel", Out(error, "stderr"), StringComparison.Ordinal);

            // The image declares no batch mode: refused by the agent with the label named.
            var batch = Assert.Throws<SessionRequestException>(() => Agent.ExecuteAsync(session.KernelId, "b", ExecutionMode.Batch, ""));
            Assert.Contains("does not offer batch mode (label ai.backend.features: 'query uid-match')", batch.Message, StringComparison.Ordinal);

            // A restart runs the recorded command again (fresh interpreter state).
            var restarted = await Agent.RestartSessionAsync(session.KernelId);
            Assert.Equal(session.Record.RunnerCommand, restarted.Record.RunnerCommand);
            Assert.Null(restarted.Record.RunnerCurve);
            Assert.Equal("fresh\n", Out(await QueryAsync(restarted, "print('fresh' if 'x' not in globals() else 'stale')")));
            await QueryAsync(restarted, "y = 5");

            // A new agent recovers the session from its record and drives the same runner without keys (state kept).
            await Fixture.RestartAgentAsync();
            var recovered = Agent.GetSession(session.KernelId);
            Assert.Equal(session.Record.RunnerCommand, recovered.Record.RunnerCommand);
            Assert.Null(recovered.Record.RunnerCurve);
            Assert.Equal("6\n", Out(await QueryAsync(recovered, "print(y + 1)")));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task A_runner_command_in_the_request_runs_the_images_runner_and_a_bad_one_is_refused()
    {
        var name = UniqueName("request-runner");
        await ImportAsync(RunnerImage(name, new Dictionary<string, string?>()));

        var empty = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(new SessionRequest { Image = name, RunnerCommand = ["", "x"] }));
        Assert.Contains("the runner command is empty", empty.Message, StringComparison.Ordinal);
        var nul = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(new SessionRequest { Image = name, RunnerCommand = ["python3", "a\0b"] }));
        Assert.Contains("argument 1 of the runner command contains a NUL", nul.Message, StringComparison.Ordinal);
        var badLabel = UniqueName("bad-runner-label");
        await ImportAsync(RunnerImage(badLabel, new Dictionary<string, string?> { [ImageLabels.RunnerCommand] = "[\"python3\", 1]" }));
        var label = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(new SessionRequest { Image = badLabel }));
        Assert.Contains($"image '{badLabel}' has a bad label: io.kata-agent.runner-command: not a JSON array of strings", label.Message, StringComparison.Ordinal);

        // This time the runner answers get-apps: its definitions are merged into the declared port of the same name.
        string[] command = ["python3", "/opt/test/runner.py", "--apps-result",
            """{"status": "done", "data": [{"name": "web", "protocol": "tcp", "url_template": "http://{host}:{port}/app", "allowed_envs": ["APP_TOKEN"]}, {"name": "undeclared"}]}"""];
        var session = await CreateAsync(new SessionRequest
        {
            Image = name,
            RunnerCommand = command,
            ServicePorts = [new ServicePortDefinition("web", "http", [8080])],
            Environment = new Dictionary<string, string> { ["KATA_FOR_THE_IMAGES_RUNNER"] = "yes" },
        });
        try
        {
            Assert.Equal(command, session.Record.RunnerCommand!);
            var web = Assert.Single(session.Record.ServicePorts);
            Assert.Equal(("web", "http", "http://{host}:{port}/app"), (web.Name, web.Protocol, web.UrlTemplate));
            Assert.Equal(["APP_TOKEN"], web.AllowedEnvs);
            // Stored with the session (what a restart or a recovered agent reads).
            var stored = Assert.Single((await Agent.Services.Store.LoadAllAsync()).Single(r => r.KernelId == session.KernelId).ServicePorts);
            Assert.Equal((web.UrlTemplate, "APP_TOKEN"), (stored.UrlTemplate, Assert.Single(stored.AllowedEnvs)));
            Assert.Equal("from the image's runner\n", Out(await QueryAsync(session, "import sys\nprint(\"from the image's runner\")")));

            // It runs where ours would: in the work dir, with the session's environment, config dir and intrinsic ports.
            var where = await QueryAsync(session, """
                import os, json
                print(os.getcwd(), os.environ.get('KATA_FOR_THE_IMAGES_RUNNER'))
                print('KATA_FOR_THE_IMAGES_RUNNER=yes' in open('/home/config/environ.txt').read().splitlines())
                print(sorted(json.load(open('/home/config/intrinsic-ports.json')).items()))
                open('/home/work/written-by-the-images-runner', 'w').write('scratch')
                """);
            Assert.True(where.ExitCode == 0, where.ToJson());
            Assert.Equal("/home/work yes\nTrue\n[('replin', 2000), ('replout', 2001)]\n", Out(where));
            Assert.Equal("scratch", await File.ReadAllTextAsync(Path.Combine(session.Record.ScratchDir, "work", "written-by-the-images-runner")));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(census.IsClean, census.ToString());
    }
}

public sealed class RuncImageSessionTests(RuncImageAgentFixture fixture) : ImageSessionTestsBase(fixture, "runc"), IClassFixture<RuncImageAgentFixture>;

public sealed class GvisorImageSessionTests(GvisorImageAgentFixture fixture) : ImageSessionTestsBase(fixture, "gvisor"), IClassFixture<GvisorImageAgentFixture>;
