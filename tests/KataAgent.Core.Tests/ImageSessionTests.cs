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

    private static async Task<ExecutionResult> CollectAsync(IAsyncEnumerable<ExecutionEvent> events)
    {
        var console = new List<ConsoleItem>();
        await foreach (var e in events)
        {
            switch (e)
            {
                case OutputEvent o:
                    console.Add(o.Item);
                    break;
                case ResultEvent r:
                    return r.Result with { Console = console };
            }
        }
        throw new InvalidOperationException("the run produced no result");
    }

    protected static string Out(ExecutionResult r, string kind = "stdout") =>
        string.Concat(r.Console.Where(c => c.Kind == kind).Select(c => c.Data));

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
}

public sealed class RuncImageSessionTests(RuncImageAgentFixture fixture) : ImageSessionTestsBase(fixture, "runc"), IClassFixture<RuncImageAgentFixture>;

public sealed class GvisorImageSessionTests(GvisorImageAgentFixture fixture) : ImageSessionTestsBase(fixture, "gvisor"), IClassFixture<GvisorImageAgentFixture>;
