using System.Text.RegularExpressions;
using KataAgent.Testing;

namespace KataAgent.Cli.Tests;

/// <summary>
/// A Backend.AI-labelled image through the CLI and `serve`: imported with `image import`, its service definition started
/// by name with `session service start` (which says where it answers), listed by `session service apps` and `session show`.
/// </summary>
public sealed partial class BackendAiImageCliTests(CliEnvironment env) : IClassFixture<CliEnvironment>
{
    [GeneratedRegex(@"^web 8080 -> 127\.0\.0\.1:(\d+)  http://127\.0\.0\.1:\1/app$", RegexOptions.Multiline)]
    private static partial Regex StartedLine();

    [Fact]
    public async Task A_service_definition_starts_by_name_says_where_it_answers_and_is_listed_with_its_url()
    {
        var name = $"kata-agent-test/backendai-cli:{Guid.NewGuid().ToString("N")[..8]}";
        var archive = Path.Combine(env.Dir, "backendai.oci.tar");
        var work = Directory.CreateTempSubdirectory("kata-derived-image-");
        try
        {
            var baseImage = await TestImages.BuildPythonAsync();
            await DerivedImages.WriteArchiveAsync(baseImage.ArchivePath, new DerivedImageSpec
            {
                Name = name,
                Files = BackendAiWebApp.Files("hello through the CLI", "http://{host}:{port}/app"),
                Labels = new Dictionary<string, string?> { ["ai.backend.service-ports"] = "web:http:8080" },
            }, work.FullName, archive);
        }
        finally
        {
            work.Delete(recursive: true);
        }

        var serve = await ServeProcess.StartAsync(env);
        string? id = null;
        try
        {
            var imported = await env.RunAsync("image", "import", archive, "--name", name);
            Assert.True(imported.ExitCode == 0, imported.ToString());
            var created = await env.RunAsync("session", "create", name, "--runtime", "runc");
            Assert.True(created.ExitCode == 0, created.ToString());
            id = created.Stdout.Trim();

            var apps = await env.RunAsync("session", "service", "apps", id);
            Assert.True(apps.ExitCode == 0, apps.ToString());
            Assert.Equal("web  url=http://{host}:{port}/app\n", apps.Stdout);

            // No command: the runner resolves the name from the image's service definition.
            var started = await env.RunAsync("session", "service", "start", id, "web", "--port", "8080", "--protocol", "http");
            Assert.True(started.ExitCode == 0, started.ToString());
            Assert.Contains("service web started", started.Stderr, StringComparison.Ordinal);
            var match = StartedLine().Match(started.Stdout);
            Assert.True(match.Success, started.ToString());
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
            Assert.Equal("hello through the CLI on 8080", await http.GetStringAsync(new Uri($"http://127.0.0.1:{match.Groups[1].Value}/app")));

            var again = await env.RunAsync("session", "service", "start", id, "web", "--port", "8080", "--protocol", "http");
            Assert.True(again.ExitCode == 0 && again.Stderr.Contains("service web running", StringComparison.Ordinal), again.ToString());

            var unknown = await env.RunAsync("session", "service", "start", id, "no-such-app", "--port", "8081");
            Assert.True(unknown.ExitCode != 0 && unknown.Stderr.Contains("unsupported service: no-such-app", StringComparison.Ordinal), unknown.ToString());

            var shown = await env.RunAsync("session", "show", id);
            Assert.True(shown.ExitCode == 0, shown.ToString());
            Assert.Matches(@"service web\s+http://\{host\}:\{port\}/app", shown.Stdout);
        }
        finally
        {
            if (id is not null)
                await env.RunAsync("session", "rm", id);
            await env.RunAsync("image", "rm", name);
            await ServeProcess.StopAsync(serve);
        }
    }
}
