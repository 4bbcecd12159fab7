using System.Text.Json;
using KataAgent.Testing;

namespace KataAgent.Cli.Tests;

/// <summary>
/// A run survives `kill -9` of the serve that collected it: the next serve adopts it from the session's runner, and
/// `session attach` prints the whole run, in order.
/// </summary>
public sealed class DurableRunCliTests(CliEnvironment env) : IClassFixture<CliEnvironment>
{
    private const int Count = 100;

    [Theory]
    [InlineData("runc")]
    [InlineData("gvisor")]
    public async Task A_run_survives_kill_9_of_the_agent_and_attach_prints_all_of_it_in_order(string runtime)
    {
        var expected = string.Concat(Enumerable.Range(0, Count).Select(i => $"count {i}\n"));
        var first = await ServeProcess.StartAsync(env);
        string id;
        try
        {
            var created = await env.RunAsync("session", "create", "--runtime", runtime);
            Assert.True(created.ExitCode == 0, created.ToString());
            id = created.Stdout.Trim();

            // 10 s of output; the client streams it until its agent dies under it.
            var exec = env.RunAsync("session", "exec", id, "-c", $"import time\nfor i in range({Count}):\n    print('count', i, flush=True)\n    time.sleep(0.1)");
            await Eventually.WaitAsync(async () => RunStates(await env.RunAsync("session", "runs", id, "--json")).Contains("running"),
                "the run to start", timeout: TimeSpan.FromSeconds(60));
            await Task.Delay(TimeSpan.FromSeconds(2));

            ProcessTable.Kill(first.Id, 9);
            await first.WaitForExitAsync();
            var cut = await exec;
            Assert.NotEqual(0, cut.ExitCode);
        }
        catch
        {
            await ServeProcess.StopAsync(first);
            throw;
        }

        var second = await ServeProcess.StartAsync(env);
        try
        {
            await Eventually.WaitAsync(async () => RunStates(await env.RunAsync("session", "runs", id, "--json")).Count > 0,
                "the new agent to adopt the run", timeout: TimeSpan.FromSeconds(60));
            var attach = await env.RunAsync("session", "attach", id);
            Assert.True(attach.ExitCode == 0, attach.ToString());
            Assert.Equal(expected, attach.Stdout);

            var runs = await env.RunAsync("session", "runs", id);
            Assert.True(runs.ExitCode == 0 && runs.Stdout.Contains("finished (exit 0)", StringComparison.Ordinal), runs.ToString());
            Assert.Equal(0, (await env.RunAsync("session", "rm", id)).ExitCode);
        }
        finally
        {
            Assert.Equal(0, await ServeProcess.StopAsync(second));
        }
    }

    private static List<string> RunStates(CliResult listed)
    {
        if (listed.ExitCode != 0 || string.IsNullOrWhiteSpace(listed.Stdout))
            return [];
        using var json = JsonDocument.Parse(listed.Stdout);
        return json.RootElement.TryGetProperty("runs", out var runs)
            ? runs.EnumerateArray().Select(run => run.GetProperty("state").GetString() ?? "").ToList()
            : [];
    }
}
