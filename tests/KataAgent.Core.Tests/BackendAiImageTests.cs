using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Core.Tests;

public sealed class RuncBackendAiFixture : BackendAiFixture;
public sealed class GvisorBackendAiFixture : BackendAiFixture;

/// <summary>An agent with the test's Backend.AI-labelled image, built and imported once for all tests of a class.</summary>
public abstract class BackendAiFixture : AgentFixture
{
    private readonly Lazy<Task<string>> _image;

    protected BackendAiFixture() => _image = new(() => BackendAiImageTestsBase.ImportImageAsync(this));

    public Task<string> ImageAsync() => _image.Value;
}

/// <summary>
/// A Backend.AI-labelled image built by the test (python base + a layer with a service definition and its server),
/// used the way Backend.AI's agent uses it: services started by name, apps listed, media, queued runs, batch input.
/// </summary>
public abstract class BackendAiImageTestsBase(BackendAiFixture fixture, string runtime)
{
    private Agent Agent => fixture.Agent;

    internal static async Task<string> ImportImageAsync(BackendAiFixture fixture)
    {
        var name = $"kata-agent-test/backendai:{Guid.NewGuid().ToString("N")[..8]}";
        await DerivedImages.ImportAsync(fixture.Agent.Containerd, new DerivedImageSpec
        {
            Name = name,
            Files = BackendAiWebApp.Files("hello from the service def"),
            Labels = new Dictionary<string, string?>
            {
                ["ai.backend.service-ports"] = "web:http:8080,notebook:preopen:8090",
                ["ai.backend.features"] = "query batch uid-match user-input",
            },
        });
        return name;
    }

    private async Task<Session> CreateAsync(SessionRequest? request = null) =>
        await Agent.CreateSessionAsync((request ?? new SessionRequest { Image = "" }) with { Image = await fixture.ImageAsync(), RuntimeClass = runtime });

    private static CancellationToken Limit() => new CancellationTokenSource(TimeSpan.FromMinutes(2)).Token;

    private static string Out(ExecutionResult r) => RunEvents.Out(r);

    /// <summary>One run through the session's client, continued to its end (input answered by <paramref name="answer"/>).</summary>
    private static async Task<(ExecutionResult Result, List<ConsoleItem> Console, List<string> Statuses)> RunToEndAsync(
        Session session, ExecutionMode mode, string text, ExecutionOptions? options = null, Func<ExecutionResult, string>? answer = null)
    {
        var runId = "run-" + Guid.NewGuid().ToString("N")[..6];
        options ??= new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) };
        var console = new List<ConsoleItem>();
        var statuses = new List<string>();
        var result = await session.Runner.ExecuteAsync(runId, mode, text, options, Limit());
        while (true)
        {
            console.AddRange(result.Console);
            statuses.Add(result.Status);
            switch (result.Status)
            {
                case ExecutionStatus.CleanFinished or ExecutionStatus.BuildFinished or ExecutionStatus.Continued:
                    result = await session.Runner.ExecuteAsync(runId, ExecutionMode.Continue, "", options, Limit());
                    break;
                case ExecutionStatus.WaitingInput when answer is not null:
                    result = await session.Runner.ExecuteAsync(runId, ExecutionMode.Input, answer(result), options, Limit());
                    break;
                default:
                    return (result, console, statuses);
            }
        }
    }

    [Fact]
    public async Task A_service_definition_starts_by_name_answers_on_its_published_port_and_is_listed_with_its_url_template()
    {
        var session = await CreateAsync();
        try
        {
            // The create merged get-apps into the declared ports.
            var web = Assert.Single(session.Record.ServicePorts, p => p.Name == "web");
            Assert.Equal("http://{host}:{port}/", web.UrlTemplate);

            // What Backend.AI's agent sends: no command; the runner resolves the definition.
            var started = await session.Runner.StartServiceAsync(new ServiceDefinition { Name = "web", Ports = [8080], Protocol = "http" }, Limit());
            Assert.True(started.Status == "started", $"{started}\n{SessionCreator.LogTail(session.Record.LogPath)}");
            var published = session.Record.Ports.Single(p => p.Name == "web" && p.ContainerPort == 8080);
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
            var body = await http.GetStringAsync(new Uri($"http://127.0.0.1:{published.HostPort}/"));
            Assert.Equal("hello from the service def on 8080", body);

            var again = await session.Runner.StartServiceAsync(new ServiceDefinition { Name = "web", Ports = [8080], Protocol = "http" }, Limit());
            Assert.Equal("running", again.Status);

            var apps = await session.Runner.GetAppsAsync("", Limit());
            Assert.Equal("done", apps.Status);
            var listed = Assert.Single(apps.Apps);
            Assert.Equal(("web", "http://{host}:{port}/"), (listed.Name, listed.UrlTemplate));
            Assert.Empty((await session.Runner.GetAppsAsync("no-such-app", Limit())).Apps);

            var unknown = await session.Runner.StartServiceAsync(new ServiceDefinition { Name = "no-such-app", Ports = [8081], Protocol = "http" }, Limit());
            Assert.Equal(("failed", "unsupported service: no-such-app"), (unknown.Status, unknown.Error));

            var preopen = await session.Runner.StartServiceAsync(new ServiceDefinition { Name = "notebook", Ports = [8090], Protocol = "preopen" }, Limit());
            Assert.Equal("started", preopen.Status);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Display_gives_media_a_silent_run_continues_and_runs_sent_together_finish_in_order()
    {
        var session = await CreateAsync();
        try
        {
            var (media, console, _) = await RunToEndAsync(session, ExecutionMode.Query, """
                class Png:
                    def _repr_png_(self):
                        return b'\x89PNG\r\n\x1a\n'
                class Page:
                    def _repr_html_(self):
                        return '<b>bold</b>'
                print('before')
                display(Png())
                Page()
                """);
            Assert.Equal((ExecutionStatus.Finished, 0), (media.Status, media.ExitCode));
            Assert.Equal(["stdout", "media", "media"], console.Select(c => c.Kind));
            Assert.Equal(("image/png", "data:image/png;base64," + Convert.ToBase64String([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0d, 0x0a, 0x1a, 0x0a])),
                (console[1].Mime, console[1].Data));
            Assert.Equal(("text/html", "<b>bold</b>"), (console[2].Mime, console[2].Data));

            // Nothing printed for longer than the flush timeout: continued, with no output, then the end.
            var shortFlush = new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(1) };
            var silentId = "silent-" + Guid.NewGuid().ToString("N")[..6];
            var silent = await session.Runner.ExecuteAsync(silentId, ExecutionMode.Query, "import time; time.sleep(4)", shortFlush, Limit());
            Assert.Equal(ExecutionStatus.Continued, silent.Status);
            Assert.Empty(silent.Console);
            Assert.Null(silent.ExitCode);
            while (silent.Status == ExecutionStatus.Continued)
                silent = await session.Runner.ExecuteAsync(silentId, ExecutionMode.Continue, "", shortFlush, Limit());
            Assert.Equal((ExecutionStatus.Finished, 0), (silent.Status, silent.ExitCode));

            // Two runs sent together: the second waits for the first and sees its effect.
            var first = RunToEndAsync(session, ExecutionMode.Query, "import time; time.sleep(2); order = ['first']; print('first')");
            var second = RunToEndAsync(session, ExecutionMode.Query, "order.append('second'); print(order)");
            var results = await Task.WhenAll(first, second);
            Assert.Equal("first\n", Out(results[0].Result with { Console = results[0].Console }));
            Assert.Equal("['first', 'second']\n", Out(results[1].Result with { Console = results[1].Console }));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Batch_exec_star_runs_main_py_with_input_and_a_signal_kill_ends_with_minus_nine()
    {
        var session = await CreateAsync();
        try
        {
            var (write, _, _) = await RunToEndAsync(session, ExecutionMode.Query, """
                open('/home/work/main.py', 'w').write("import os\nname = input('name? ')\nprint('hello', name, os.environ.get('_BACKEND_BATCH_MODE'))\n")
                """);
            Assert.Equal(0, write.ExitCode);

            var prompts = new List<string>();
            var (batch, console, statuses) = await RunToEndAsync(session, ExecutionMode.Batch, "",
                new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30), Build = "*", Exec = "*" },
                answer: waiting =>
                {
                    prompts.Add(string.Concat(waiting.Console.Select(c => c.Data)));
                    return "kata";
                });
            Assert.True(batch.Status == ExecutionStatus.Finished && batch.ExitCode == 0, batch.ToJson());
            Assert.Contains(ExecutionStatus.WaitingInput, statuses);
            Assert.Contains("hello kata 1\n", string.Concat(console.Where(c => c.Kind == "stdout").Select(c => c.Data)), StringComparison.Ordinal);

            var (killed, _, _) = await RunToEndAsync(session, ExecutionMode.Batch, "",
                new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30), Exec = "kill -9 $$" });
            Assert.Equal((ExecutionStatus.Finished, -9), (killed.Status, killed.ExitCode));

            // The task output was also copied under /home/work/.logs/task/.
            var (logs, logConsole, _) = await RunToEndAsync(session, ExecutionMode.Query, """
                import os
                found = [os.path.join(d, f) for d, _, fs in os.walk('/home/work/.logs/task') for f in fs]
                print(any('hello kata' in open(p).read() for p in found))
                """);
            Assert.Equal("True\n", Out(logs with { Console = logConsole }));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task User_code_sees_the_backend_ai_environment_and_files_where_backend_ai_puts_them()
    {
        var session = await CreateAsync(new SessionRequest
        {
            Image = "",
            Environment = new Dictionary<string, string> { ["KATA_FROM_REQUEST"] = "yes" },
            BootstrapScript = "echo ran > /home/work/bootstrap-ran\n",
        });
        try
        {
            var (env, console, _) = await RunToEndAsync(session, ExecutionMode.Query, """
                import os, json, site
                e = os.environ
                print(e['LANG'], e['HOME'], e.get('TERM'), e.get('SHELL'), e['PATH'].split(':')[0], e.get('KATA_FROM_REQUEST'))
                print(site.getusersitepackages() in e.get('PYTHONPATH', '').split(':'))
                print(os.path.exists('/home/work/bootstrap.sh'), open('/home/work/bootstrap-ran').read().strip())
                lines = open('/home/config/environ.txt').read().splitlines()
                print(all(l and not l.startswith('#') and '=' in l for l in lines))
                print(sorted(json.load(open('/home/config/intrinsic-ports.json')).items()))
                """);
            Assert.Equal(0, env.ExitCode);
            var lines = Out(env with { Console = console }).Split('\n');
            var first = lines[0].Split(' ');
            Assert.Equal(["C.UTF-8", "/home/work", "xterm"], first[..3]);
            Assert.StartsWith("/bin/", first[3], StringComparison.Ordinal);
            Assert.Equal(["/home/work/.local/bin", "yes"], first[4..]);
            Assert.Equal("True", lines[1]);
            Assert.Equal("True ran", lines[2]);
            Assert.Equal("True", lines[3]);
            Assert.Equal("[('replin', 2000), ('replout', 2001)]", lines[4]);

            // status is the readiness signal: it carries started_at.
            var status = await session.Runner.GetStatusAsync(Limit());
            Assert.True(status.ContainsKey("started_at"), string.Join(",", status.Keys));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }
}

public sealed class RuncBackendAiImageTests(RuncBackendAiFixture fixture) : BackendAiImageTestsBase(fixture, "runc"), IClassFixture<RuncBackendAiFixture>;

public sealed class GvisorBackendAiImageTests(GvisorBackendAiFixture fixture) : BackendAiImageTestsBase(fixture, "gvisor"), IClassFixture<GvisorBackendAiFixture>;
