namespace KataAgent.Cli.Tests;

/// <summary>`session sh` and `session cmd` end to end against a real `kata-agent serve` (a runc session).</summary>
public sealed class SessionShellTests(CliEnvironment env) : IClassFixture<CliEnvironment>
{
    [Fact]
    public async Task Sh_forwards_piped_stdin_propagates_exit_codes_and_runs_background_commands_that_cmd_kill_ends()
    {
        var serve = await ServeProcess.StartAsync(env);
        try
        {
            var created = await env.RunAsync("session", "create", "--runtime", "runc");
            Assert.True(created.ExitCode == 0, created.ToString());
            var id = created.Stdout.Trim();

            var cat = await env.RunWithStdinAsync("piped line 1\npiped line 2\n", "session", "sh", id, "--", "cat");
            Assert.True(cat.ExitCode == 0, cat.ToString());
            Assert.Equal("piped line 1\npiped line 2\n", cat.Stdout);

            var failing = await env.RunAsync("session", "sh", id, "--env", "WHO=cli", "--", "sh", "-c", "echo $WHO; echo bad >&2; exit 42");
            Assert.True(failing.ExitCode == 42, failing.ToString());
            Assert.Equal("cli\n", failing.Stdout);
            Assert.Contains("bad", failing.Stderr, StringComparison.Ordinal);

            var missing = await env.RunAsync("session", "sh", id, "--", "no-such-program-xyz");
            Assert.NotEqual(0, missing.ExitCode);
            Assert.Contains("command not found: no-such-program-xyz", missing.Stderr, StringComparison.Ordinal);

            var background = await env.RunAsync("session", "sh", id, "--background", "--id", "sleeper", "--", "sleep", "600");
            Assert.True(background.ExitCode == 0, background.ToString());
            Assert.Equal("sleeper\n", background.Stdout);
            var ls = await env.RunAsync("session", "cmd", "ls", id);
            Assert.Contains("sleeper", ls.Stdout, StringComparison.Ordinal);
            Assert.Contains("running", ls.Stdout, StringComparison.Ordinal);
            var kill = await env.RunAsync("session", "cmd", "kill", id, "sleeper", "--signal", "TERM");
            Assert.True(kill.ExitCode == 0, kill.ToString());
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
            CliResult listed;
            do
            {
                listed = await env.RunAsync("session", "cmd", "ls", id);
                if (listed.Stdout.Contains("signal 15", StringComparison.Ordinal))
                    break;
                await Task.Delay(500);
            }
            while (DateTime.UtcNow < deadline);
            Assert.Contains("signal 15", listed.Stdout, StringComparison.Ordinal);
            var unknown = await env.RunAsync("session", "cmd", "kill", id, "no-such-command");
            Assert.NotEqual(0, unknown.ExitCode);
            Assert.Contains("no command 'no-such-command'", unknown.Stderr, StringComparison.Ordinal);

            Assert.Equal(0, (await env.RunAsync("session", "rm", id)).ExitCode);
        }
        finally
        {
            await ServeProcess.StopAsync(serve);
        }
    }
}
