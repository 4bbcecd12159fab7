using System.Net.Sockets;
using System.Text;
using KataAgent.Core.Scratch;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;
using NetMQ;
using NetMQ.Sockets;

namespace KataAgent.Core.Tests;

public sealed class RuncAgentFixture : AgentFixture;
public sealed class GvisorAgentFixture : AgentFixture;

/// <summary>Sessions end to end: base image, runner inside, CNI network, published ports — on runc and gVisor.</summary>
public abstract class SessionTestsBase(AgentFixture fixture, string runtime)
{
    protected AgentFixture Fixture { get; } = fixture;
    protected Agent Agent => Fixture.Agent;

    protected Task<Session> CreateAsync(SessionRequest? request = null) =>
        Agent.CreateSessionAsync((request ?? new SessionRequest { Image = Fixture.ImageName }) with { RuntimeClass = runtime, Image = Fixture.ImageName });

    protected async Task<ExecutionResult> RunAsync(Session session, ExecutionMode mode, string text, ExecutionOptions? options = null)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var runId = "run-" + Guid.NewGuid().ToString("N")[..6];
        options ??= new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) };
        var result = await CollectAsync(Agent.ExecuteAsync(session.KernelId, runId, mode, text, options, timeout.Token));
        var console = result.Console.ToList();
        // Batch steps end one at a time (clean-finished, build-finished): continue to the end of the run.
        while (result.Status is ExecutionStatus.CleanFinished or ExecutionStatus.BuildFinished or ExecutionStatus.Continued)
        {
            result = await CollectAsync(Agent.ExecuteAsync(session.KernelId, runId, ExecutionMode.Continue, "", options, timeout.Token));
            console.AddRange(result.Console);
        }
        return result with { Console = console };
    }

    protected static Task<ExecutionResult> CollectAsync(IAsyncEnumerable<ExecutionEvent> events) => RunEvents.CollectAsync(events);

    protected static Task<ExecutionResult> CollectAsync(IAsyncEnumerator<ExecutionEvent> events) => RunEvents.CollectAsync(events);

    protected static string Out(ExecutionResult r, string kind = "stdout") => RunEvents.Out(r, kind);

    [Fact]
    public async Task Query_mode_keeps_state_and_reports_errors()
    {
        var session = await CreateAsync();
        try
        {
            var first = await RunAsync(session, ExecutionMode.Query, "x = 1");
            Assert.Equal(ExecutionStatus.Finished, first.Status);
            var second = await RunAsync(session, ExecutionMode.Query, "print(x + 1)");
            Assert.True(Out(second) == "2\n", second.ToJson());
            Assert.Equal(0, second.ExitCode);

            var error = await RunAsync(session, ExecutionMode.Query, "1/0");
            Assert.Contains("ZeroDivisionError", Out(error, "stderr"), StringComparison.Ordinal);
            Assert.NotEqual(0, error.ExitCode);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Input_interrupt_batch_and_large_output()
    {
        var session = await CreateAsync();
        try
        {
            var runId = "input-run";
            var asked = await CollectAsync(Agent.ExecuteAsync(session.KernelId, runId, ExecutionMode.Query, "name = input('who? ')\nprint('hello', name)"));
            Assert.Equal(ExecutionStatus.WaitingInput, asked.Status);
            var answered = await CollectAsync(Agent.ExecuteAsync(session.KernelId, runId, ExecutionMode.Input, "kata"));
            Assert.Contains("hello kata", Out(answered), StringComparison.Ordinal);

            // Interrupt: the loop stops, the interpreter and its state stay.
            await RunAsync(session, ExecutionMode.Query, "y = 41");
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            await using var loop = Agent.ExecuteAsync(session.KernelId, "loop-run", ExecutionMode.Query,
                "import sys\nsys.stdout.write('looping\\n')\nwhile True: pass", cancellationToken: timeout.Token).GetAsyncEnumerator(timeout.Token);
            // The first output proves the loop is running.
            Assert.True(await loop.MoveNextAsync(), "the loop ended before any output");
            var started = Assert.IsType<OutputEvent>(loop.Current);
            Assert.StartsWith("looping", started.Item.Data, StringComparison.Ordinal);
            await Agent.InterruptAsync(session.KernelId);
            var interrupted = await CollectAsync(loop);
            Assert.Contains("KeyboardInterrupt", Out(interrupted, "stderr"), StringComparison.Ordinal);
            Assert.Equal("42\n", Out(await RunAsync(session, ExecutionMode.Query, "print(y + 1)")));

            // Batch: build then exec, with the program's own exit code.
            var batch = await RunAsync(session, ExecutionMode.Batch, "", new ExecutionOptions
            {
                FlushTimeout = TimeSpan.FromSeconds(30),
                Build = "printf '#!/bin/sh\\necho built-and-ran\\nexit 3\\n' > prog.sh && chmod +x prog.sh",
                Exec = "./prog.sh",
            });
            Assert.Equal(3, batch.ExitCode);
            Assert.Contains("built-and-ran", Out(batch), StringComparison.Ordinal);

            // 4 MiB arrives complete and in order.
            var big = await RunAsync(session, ExecutionMode.Query,
                "import sys\nfor i in range(65536):\n    sys.stdout.write('%063d\\n' % i)");
            var lines = Out(big).Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(65536, lines.Length);
            for (var i = 0; i < lines.Length; i++)
                Assert.Equal(i.ToString("D63", System.Globalization.CultureInfo.InvariantCulture), lines[i]);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_service_answers_on_its_published_port()
    {
        var session = await CreateAsync(new SessionRequest
        {
            Image = Fixture.ImageName,
            ServicePorts = [new ServicePortDefinition("web", "http", [8080])],
        });
        try
        {
            var port = session.Record.Ports.Single(p => p.Name == "web");
            var result = await session.Runner.StartServiceAsync(new ServiceDefinition
            {
                Name = "web",
                Command = ["python3", "-m", "http.server", "8080"],
                Ports = [8080],
                Protocol = "http",
            });
            Assert.True(result.Status == "started", $"service: {result.Status} {result.Error}");
            await File.WriteAllTextAsync(Path.Combine(session.Record.ScratchDir, "work", "hello.txt"), "served from the session\n");
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
            var body = await http.GetStringAsync(new Uri($"http://127.0.0.1:{port.HostPort}/hello.txt"));
            Assert.Equal("served from the session\n", body);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_host_client_without_the_session_key_can_neither_run_code_nor_read_output()
    {
        var session = await CreateAsync();
        try
        {
            var record = session.Record;
            const UnixFileMode rootOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            Assert.NotNull(record.RunnerCurve);
            var keyFile = Path.Combine(record.ScratchDir, "config", ScratchDirectory.RunnerCurveKeyFile);
            Assert.Equal(rootOnly, File.GetUnixFileMode(keyFile));
            Assert.Equal(rootOnly, File.GetUnixFileMode(Path.Combine(Fixture.Options.StateDir, "sessions", record.KernelId + ".json")));
            var label = (await Agent.Containerd.Containers.GetAsync(record.ContainerId)).Labels[SessionLabels.Record];
            Assert.DoesNotContain(record.RunnerCurve.RunnerPublicKey, label, StringComparison.Ordinal);
            Assert.DoesNotContain(record.RunnerCurve.AgentSecretKey, label, StringComparison.Ordinal);

            Assert.Equal(ExecutionStatus.Finished, (await RunAsync(session, ExecutionMode.Query, "SECRET = 41")).Status);
            foreach (var (name, serverKey) in new[] { ("NULL mechanism", (byte[]?)null), ("another runner's key", new NetMQCertificate().PublicKey) })
            {
                // What any local user can do: connect to the published runner ports on 127.0.0.1.
                using var push = new PushSocket();
                using var pull = new PullSocket();
                foreach (NetMQSocket socket in new NetMQSocket[] { push, pull })
                {
                    socket.Options.Linger = TimeSpan.Zero;
                    if (serverKey is not null)
                    {
                        socket.Options.CurveServerKey = serverKey;
                        socket.Options.CurveCertificate = new NetMQCertificate();
                    }
                }
                pull.Connect($"tcp://127.0.0.1:{record.ReplOutPort}");
                push.Connect($"tcp://127.0.0.1:{record.ReplInPort}");
                foreach (var (type, payload) in new[] { ("code", "SECRET = 0\nATTACKER = 1"), ("status", ""), ("exec", "touch /home/work/attacker") })
                {
                    var message = new NetMQMessage(2);
                    message.Append(Encoding.ASCII.GetBytes(type));
                    message.Append(Encoding.UTF8.GetBytes(payload));
                    _ = push.TrySendMultipartMessage(TimeSpan.FromSeconds(5), message);
                }
                var answer = new NetMQMessage();
                Assert.False(pull.TryReceiveMultipartMessage(TimeSpan.FromSeconds(3), ref answer), $"{name}: the session's runner answered");
            }

            var check = await RunAsync(session, ExecutionMode.Query, "import os\nprint(SECRET, 'ATTACKER' in globals(), os.path.exists('/home/work/attacker'))");
            Assert.True(Out(check) == "41 False False\n", check.ToJson());
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Cgroup_limits_inside_the_session_are_what_was_asked()
    {
        var session = await CreateAsync(new SessionRequest { Image = Fixture.ImageName, Cpus = 1, MemoryBytes = 256L << 20 });
        try
        {
            Assert.Equal(256L << 20, session.Record.MemoryBytes);
            if (runtime == "runc")
            {
                // runc shows the container its own cgroup directories.
                var limits = await RunAsync(session, ExecutionMode.Query,
                    "import os\nprint(open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read().strip())\nprint(','.join(map(str, sorted(os.sched_getaffinity(0)))))");
                var lines = Out(limits).Split('\n', StringSplitOptions.RemoveEmptyEntries);
                Assert.Equal((256L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture), lines[0]);
                Assert.Equal(string.Join(",", Resources.ResourceAllocator.ParseCpuSet(session.Record.CpuSet)), lines[1]);
            }
            // Going past the memory limit does not succeed: MemoryError, the OOM killer taking the interpreter, or (when it
            // takes the session's init, as it may under gVisor) the session ending oom-killed with the limit.
            const string hogCode = "b = bytearray(600 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('allocated')";
            try
            {
                var hog = await RunAsync(session, ExecutionMode.Query, hogCode);
                Assert.DoesNotContain("allocated", Out(hog), StringComparison.Ordinal);
                Assert.NotEqual(0, hog.ExitCode ?? -1);
            }
            catch (SessionEndedDuringRunException ended)
            {
                Assert.Equal("oom-killed", ended.Reason.Name);
                Assert.Equal(256L << 20, ended.Reason.MemoryLimitBytes);
            }
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Destroy_reaps_everything()
    {
        var session = await CreateAsync();
        var record = session.Record;
        Assert.Contains(HostNetwork.NetnsNames(), n => record.NetnsPath.EndsWith("/" + n, StringComparison.Ordinal));

        await Agent.DestroySessionAsync(session.KernelId);
        await Agent.DestroySessionAsync(session.KernelId); // idempotent

        var census = await LeakCensus.TakeAsync(Agent.Containerd, Fixture.DataDir);
        Assert.True(census.IsClean, census.ToString());
        Assert.DoesNotContain(HostNetwork.NetnsNames(), n => record.NetnsPath.EndsWith("/" + n, StringComparison.Ordinal));
        Assert.Empty(await HostNetwork.RulesMentioningAsync(record.KernelId));
        Assert.False(Directory.Exists(record.ScratchDir), "scratch dir left behind");
        Assert.False(File.Exists(record.LogPath), "log left behind");
        Assert.DoesNotContain(record.ReplInPort, Agent.Services.Ports.InUse);
        Assert.DoesNotContain(Agent.Resources.Allocations, a => a.KernelId == record.KernelId);
        using var probe = new TcpClient();
        await Assert.ThrowsAnyAsync<SocketException>(() => probe.ConnectAsync("127.0.0.1", record.ReplInPort));
    }

    [Fact]
    public async Task A_session_whose_process_dies_is_reported_exited_with_its_code()
    {
        var session = await CreateAsync();
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            using var subscription = Agent.Subscribe();
            var exited = Task.Run(async () =>
            {
                await foreach (var e in subscription.ReadAllAsync(timeout.Token))
                {
                    if (e.KernelId == session.KernelId && e.Kind == "exited")
                        return e;
                }
                throw new InvalidOperationException("no exit event");
            });
            await Agent.Containerd.Tasks.KillAsync(session.Record.ContainerId, 9, all: true);
            var e = await exited;
            Assert.Equal(SessionState.Exited, session.State);
            Assert.Equal(137, e.ExitCode);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }
}

public sealed class RuncSessionTests(RuncAgentFixture fixture) : SessionTestsBase(fixture, "runc"), IClassFixture<RuncAgentFixture>;

public sealed class GvisorSessionTests(GvisorAgentFixture fixture) : SessionTestsBase(fixture, "gvisor"), IClassFixture<GvisorAgentFixture>;
