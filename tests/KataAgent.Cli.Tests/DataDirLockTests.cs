using System.Text.Json;
using KataAgent.Core.Locking;
using KataAgent.Testing;

namespace KataAgent.Cli.Tests;

/// <summary>One agent per data dir: parallel runs take turns on it (or use its serve), a second serve is refused.</summary>
public sealed class DataDirLockTests(CliEnvironment env) : IClassFixture<CliEnvironment>
{
    [Theory]
    [InlineData("runc")]
    [InlineData("gvisor")]
    public async Task Five_runs_started_together_all_succeed_with_their_own_output_and_leave_nothing(string runtime)
    {
        var runs = Enumerable.Range(0, 5)
            .Select(i => env.RunAsync("run", "--runtime", runtime, "-c", $"import time; time.sleep(1); print('run {i}')"))
            .ToList();
        var results = await Task.WhenAll(runs);
        for (var i = 0; i < results.Length; i++)
        {
            Assert.True(results[i].ExitCode == 0, $"run {i}: {results[i]}");
            Assert.Equal($"run {i}\n", results[i].Stdout);
            Assert.DoesNotContain("error", results[i].Stderr, StringComparison.OrdinalIgnoreCase);
        }
        // The ones that found the data dir taken said what they waited for.
        Assert.Contains(results, r => r.Stderr.Contains("waiting for kata-agent run (pid ", StringComparison.Ordinal));
        Assert.Empty(env.ProcessesOfThisEnvironment());
        var census = await env.CensusAsync();
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task A_second_serve_is_refused_and_a_killed_holder_hands_the_data_dir_over_at_once()
    {
        var first = await ServeProcess.StartAsync(env);
        string id;
        try
        {
            var created = await env.RunAsync("session", "create", "--runtime", "runc");
            Assert.True(created.ExitCode == 0, created.ToString());
            id = created.Stdout.Trim();
            Assert.Equal(0, (await env.RunAsync("session", "exec", id, "-c", "x = 'mine'")).ExitCode);
            var netns = env.Netns();
            Assert.Single(netns);

            var other = Path.Combine(env.Dir, "other.sock");
            var second = await CliProcess.RunAsync(["--config", env.ConfigPath, "--socket", other, "serve"], timeoutSeconds: 120);
            Assert.True(second.ExitCode != 0, second.ToString());
            Assert.True(Text.LineCount(second.Stderr) == 1, second.ToString());
            Assert.Contains($"kata-agent serve (pid {first.Id}, socket {env.SocketPath})", second.Stderr, StringComparison.Ordinal);
            Assert.False(File.Exists(other));

            // The first serve's session is untouched: same netns, interpreter state, runner reachable.
            Assert.Equal(netns, env.Netns());
            var exec = await env.RunAsync("session", "exec", id, "-c", "print(x)");
            Assert.True(exec.ExitCode == 0, exec.ToString());
            Assert.Equal("mine\n", exec.Stdout);

            // A run pointed at no serve finds the holder through the lock file and uses its API.
            var run = await env.RunAsync("--socket", Path.Combine(env.Dir, "none.sock"), "run", "--runtime", "runc", "-c", "print('through the holder')");
            Assert.True(run.ExitCode == 0, run.ToString());
            Assert.Equal("through the holder\n", run.Stdout);

            // kill -9: the kernel drops the lock with the process.
            ProcessTable.Kill(first.Id, 9);
            await first.WaitForExitAsync();
            using (DataDirLock.Acquire(env.DataDir, new DataDirLockHolder("test", Environment.ProcessId, null)))
            {
            }
        }
        catch
        {
            await ServeProcess.StopAsync(first);
            throw;
        }

        var third = await ServeProcess.StartAsync(env);
        try
        {
            using (var ls = JsonDocument.Parse((await env.RunAsync("session", "ls", "--json")).Stdout))
            {
                var session = Assert.Single(ls.RootElement.GetProperty("sessions").EnumerateArray());
                Assert.Equal(id, session.GetProperty("kernelId").GetString());
                Assert.Equal("running", session.GetProperty("state").GetString());
            }
            var exec = await env.RunAsync("session", "exec", id, "-c", "print(x)");
            Assert.True(exec.ExitCode == 0, exec.ToString());
            Assert.Equal("mine\n", exec.Stdout);
            Assert.Equal(0, (await env.RunAsync("session", "rm", id)).ExitCode);
        }
        finally
        {
            Assert.Equal(0, await ServeProcess.StopAsync(third));
        }
        var census = await env.CensusAsync();
        Assert.True(census.IsClean, census.ToString());
    }
}
