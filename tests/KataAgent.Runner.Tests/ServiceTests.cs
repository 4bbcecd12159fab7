using System.Net.Sockets;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Runner.Tests;

[Collection(RunnerCollection.Name)]
public sealed class ServiceTests(PublishedRunner runner)
{
    [Fact]
    public async Task HttpServerServiceStartsAnswersAndStops()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
        {
            File.WriteAllText(Path.Combine(prepared.WorkDir, "hello.txt"), "hello from the service\n");
            ServiceDefinitionTests.SetRunnerSetting(prepared, "serviceDefsDir", Directory.CreateDirectory(Path.Combine(prepared.Root, "service-defs")).FullName);
        });
        CancellationToken limit = RunnerTestHelpers.Limit();
        int port = RunnerHost.FreePort();

        ServiceResult started = await host.Client.StartServiceAsync(new ServiceDefinition
        {
            Name = "web",
            Protocol = "http",
            Ports = [port],
            Command = [PublishedRunner.PythonPath, "-m", "http.server", "--bind", "127.0.0.1", "{port}"],
        }, limit);
        Assert.True(started.Succeeded, started.Error);
        Assert.Equal("started", started.Status);

        using (var http = new HttpClient())
        {
            string body = await http.GetStringAsync(new Uri($"http://127.0.0.1:{port}/hello.txt"), limit);
            Assert.Equal("hello from the service\n", body);
        }

        ServiceResult again = await host.Client.StartServiceAsync(new ServiceDefinition
        {
            Name = "web", Ports = [port], Command = ["unused"],
        }, limit);
        Assert.Equal("running", again.Status);

        // get-apps lists service definitions (an empty dir here), not the processes that run.
        AppsResult apps = await host.Client.GetAppsAsync(limit);
        Assert.Equal("done", apps.Status);
        Assert.Empty(apps.Apps);

        await host.Client.ShutdownServiceAsync("web", limit);
        await Eventually.WaitAsync(async () => !await AcceptsAsync(port), $"port {port} to stop accepting after the shutdown", cancellationToken: limit);
        ServiceResult restarted = await host.Client.StartServiceAsync(new ServiceDefinition
        {
            Name = "web", Ports = [port], Command = [PublishedRunner.PythonPath, "-m", "http.server", "--bind", "127.0.0.1", "{port}"],
        }, limit);
        Assert.Equal("started", restarted.Status);
    }

    [Fact]
    public async Task ServiceThatExitsAnswersFailedWithTheReason()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);

        ServiceResult result = await host.Client.StartServiceAsync(new ServiceDefinition
        {
            Name = "broken",
            Ports = [RunnerHost.FreePort()],
            Command = [PublishedRunner.PythonPath, "-c", "import sys; print('cannot start: no config', file=sys.stderr); sys.exit(3)"],
        }, RunnerTestHelpers.Limit());

        Assert.Equal("failed", result.Status);
        Assert.Contains("exited with code 3", result.Error);
        Assert.Contains("cannot start: no config", result.Error);
    }

    [Fact]
    public async Task ServiceWithAMissingProgramAnswersFailed()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);

        ServiceResult result = await host.Client.StartServiceAsync(new ServiceDefinition
        {
            Name = "missing", Ports = [RunnerHost.FreePort()], Command = ["/nonexistent/kata-service"],
        }, RunnerTestHelpers.Limit());

        Assert.Equal("failed", result.Status);
        Assert.Contains("/nonexistent/kata-service", result.Error);
    }

    private static async Task<bool> AcceptsAsync(int port)
    {
        using var client = new TcpClient();
        try
        {
            await client.ConnectAsync("127.0.0.1", port);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
