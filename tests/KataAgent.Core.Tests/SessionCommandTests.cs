using System.Text;
using KataAgent.Core.Commands;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;

namespace KataAgent.Core.Tests;

public sealed class RuncCommandFixture : AgentFixture;
public sealed class GvisorCommandFixture : AgentFixture;

/// <summary>
/// Commands beyond the interpreter on real sessions (runc and gVisor), through the runner: stdin, exit codes, the session
/// user, a PTY resized, a background command signalled, bad requests, a paused and an ended session.
/// </summary>
public abstract class SessionCommandTestsBase(AgentFixture fixture, string runtime)
{
    private static readonly TimeSpan Generous = TimeSpan.FromMinutes(3);

    private Agent Agent => fixture.Agent;

    private Task<Session> CreateAsync() => Agent.CreateSessionAsync(new SessionRequest
    {
        Image = fixture.ImageName, RuntimeClass = runtime, Uid = 1000, Gid = 1000,
    });

    private static async Task<(string Stdout, string Stderr, CommandExit Exit)> CollectAsync(IAsyncEnumerable<CommandEvent> events)
    {
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        await foreach (var item in events)
        {
            switch (item)
            {
                case CommandOutput output:
                    (output.Stream == "stderr" ? stderr : stdout).Append(Encoding.UTF8.GetString(output.Data));
                    break;
                case CommandExit exit:
                    return (stdout.ToString(), stderr.ToString(), exit);
            }
        }
        throw new InvalidOperationException($"the command's events ended without an exit; stdout so far: {stdout}");
    }

    [Fact]
    public async Task Cat_echoes_stdin_exit_codes_come_back_commands_run_as_the_session_user_and_bad_requests_are_named()
    {
        var session = await CreateAsync();
        using var limit = new CancellationTokenSource(Generous);
        try
        {
            var cat = await Agent.StartCommandAsync(session.KernelId, new CommandRequest { Arguments = ["cat"], Stdin = true }, limit.Token);
            Assert.StartsWith("cmd-", cat.Id, StringComparison.Ordinal);
            await Agent.SendCommandInputAsync(session.KernelId, cat.Id, "echo me\n"u8.ToArray(), endOfInput: false, limit.Token);
            await Agent.SendCommandInputAsync(session.KernelId, cat.Id, "and me"u8.ToArray(), endOfInput: true, limit.Token);
            var (stdout, _, exit) = await CollectAsync(Agent.ReadCommandAsync(session.KernelId, cat.Id, limit.Token));
            Assert.Equal("echo me\nand me", stdout);
            Assert.Equal(new CommandExit(0, null), exit);

            // Its own exit code and stderr, the session user (not root), the work dir, and no more rights than the session.
            var failing = Agent.RunCommandAsync(session.KernelId, new CommandRequest
            {
                Id = "failing",
                Shell = "id -u; pwd; echo $GIVEN; touch /etc/kata-cmd-probe 2>/dev/null && echo wrote-etc; echo oops >&2; exit 3",
                Environment = new Dictionary<string, string> { ["GIVEN"] = "env-ok" },
            }, limit.Token);
            (stdout, var stderr, exit) = await CollectAsync(failing);
            Assert.Equal("1000\n/home/work\nenv-ok\n", stdout);
            Assert.Equal("oops\n", stderr);
            Assert.Equal(3, exit.ExitCode);
            Assert.Null(exit.Signal);
            Assert.Contains(Agent.ListCommands(session.KernelId), info => info.Id == "failing" && info.Exit?.ExitCode == 3);

            var empty = await Assert.ThrowsAsync<SessionRequestException>(() =>
                Agent.StartCommandAsync(session.KernelId, new CommandRequest { Arguments = [] }, limit.Token));
            Assert.Contains("argv is empty", empty.Message, StringComparison.Ordinal);
            var missing = await Assert.ThrowsAsync<SessionRequestException>(() =>
                Agent.StartCommandAsync(session.KernelId, new CommandRequest { Arguments = ["no-such-program-xyz"] }, limit.Token));
            Assert.Contains("command not found: no-such-program-xyz", missing.Message, StringComparison.Ordinal);
            await Assert.ThrowsAsync<CommandNotFoundException>(() => Agent.SignalCommandAsync(session.KernelId, "no-such-id", "TERM", limit.Token));
            var sleeper = await Agent.StartCommandAsync(session.KernelId, new CommandRequest { Id = "sleeper", Arguments = ["sleep", "600"] }, limit.Token);
            var badSignal = await Assert.ThrowsAsync<SessionRequestException>(() => Agent.SignalCommandAsync(session.KernelId, sleeper.Id, "NOPE", limit.Token));
            Assert.Contains("unknown signal 'NOPE'", badSignal.Message, StringComparison.Ordinal);
            var noTerminal = await Assert.ThrowsAsync<SessionRequestException>(() =>
                Agent.ResizeCommandAsync(session.KernelId, sleeper.Id, new TerminalSize(80, 24), limit.Token));
            Assert.Contains("no terminal", noTerminal.Message, StringComparison.Ordinal);
            await Agent.SignalCommandAsync(session.KernelId, sleeper.Id, "KILL", limit.Token);
            Assert.Equal(9, (await Agent.WaitCommandAsync(session.KernelId, sleeper.Id, limit.Token)).Signal);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_pty_program_sees_its_new_size_and_a_background_sleep_signalled_with_TERM_reports_signal_15()
    {
        var session = await CreateAsync();
        using var limit = new CancellationTokenSource(Generous);
        try
        {
            // Background: nobody reads it; it keeps the session busy (not idle) while it runs.
            var sleeper = await Agent.StartCommandAsync(session.KernelId, new CommandRequest { Id = "bg", Arguments = ["sleep", "600"] }, limit.Token);
            Assert.True(session.ActiveRuns > 0);

            var tty = await Agent.StartCommandAsync(session.KernelId, new CommandRequest
            {
                Id = "tty", Shell = "stty size; read line; stty size; echo got=$line", Terminal = new TerminalSize(80, 24),
            }, limit.Token);
            var seen = new StringBuilder();
            await using (var events = Agent.ReadCommandAsync(session.KernelId, tty.Id, limit.Token).GetAsyncEnumerator(limit.Token))
            {
                while (!seen.ToString().Contains("24 80", StringComparison.Ordinal) && await events.MoveNextAsync())
                {
                    if (events.Current is CommandOutput output)
                        seen.Append(Encoding.UTF8.GetString(output.Data));
                }
                await Agent.ResizeCommandAsync(session.KernelId, tty.Id, new TerminalSize(132, 40), limit.Token);
                await Agent.SendCommandInputAsync(session.KernelId, tty.Id, "resized\n"u8.ToArray(), endOfInput: false, limit.Token);
                CommandExit? ttyExit = null;
                while (ttyExit is null && await events.MoveNextAsync())
                {
                    if (events.Current is CommandOutput output)
                        seen.Append(Encoding.UTF8.GetString(output.Data));
                    ttyExit = events.Current as CommandExit;
                }
                Assert.Equal(0, ttyExit?.ExitCode);
            }
            Assert.Contains("40 132", seen.ToString(), StringComparison.Ordinal);
            Assert.Contains("got=resized", seen.ToString(), StringComparison.Ordinal);

            Assert.Contains(Agent.ListCommands(session.KernelId), info => info.Id == "bg" && info.Exit is null && info.Pid == sleeper.Pid);
            await Agent.SignalCommandAsync(session.KernelId, "bg", "SIGTERM", limit.Token);
            var exit = await Agent.WaitCommandAsync(session.KernelId, "bg", limit.Token);
            Assert.Equal(new CommandExit(null, 15), exit);
            Assert.Equal(143, exit.ShellExitCode);
            Assert.Contains(Agent.ListCommands(session.KernelId), info => info.Id == "bg" && info.Exit?.Signal == 15);
            Assert.Equal(0, session.ActiveRuns);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_paused_session_refuses_commands_and_a_command_read_when_its_session_is_destroyed_ends_with_the_reason()
    {
        var session = await CreateAsync();
        using var limit = new CancellationTokenSource(Generous);
        var destroyed = false;
        try
        {
            var sleeper = await Agent.StartCommandAsync(session.KernelId, new CommandRequest { Arguments = ["sleep", "600"] }, limit.Token);
            await Agent.PauseSessionAsync(session.KernelId, limit.Token);
            await Assert.ThrowsAsync<SessionPausedException>(() =>
                Agent.StartCommandAsync(session.KernelId, new CommandRequest { Arguments = ["true"] }, limit.Token));
            await Assert.ThrowsAsync<SessionPausedException>(() => Agent.SignalCommandAsync(session.KernelId, sleeper.Id, "TERM", limit.Token));
            await Agent.ResumeSessionAsync(session.KernelId, limit.Token);

            var reading = CollectAsync(Agent.ReadCommandAsync(session.KernelId, sleeper.Id, limit.Token));
            await Agent.DestroySessionAsync(session.KernelId);
            destroyed = true;
            var ended = await Assert.ThrowsAsync<SessionEndedDuringRunException>(() => reading);
            Assert.Equal(sleeper.Id, ended.RunId);
            Assert.Equal("destroyed", ended.Reason.Name);
        }
        finally
        {
            if (!destroyed)
                await Agent.DestroySessionAsync(session.KernelId);
        }
    }
}

public sealed class RuncSessionCommandTests(RuncCommandFixture fixture)
    : SessionCommandTestsBase(fixture, "runc"), IClassFixture<RuncCommandFixture>;

public sealed class GvisorSessionCommandTests(GvisorCommandFixture fixture)
    : SessionCommandTestsBase(fixture, "gvisor"), IClassFixture<GvisorCommandFixture>;
