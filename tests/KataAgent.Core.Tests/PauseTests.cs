using System.Collections.Concurrent;
using System.Globalization;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using Xunit.Abstractions;
using TaskStatus = Containerd.V1.Types.Status;

namespace KataAgent.Core.Tests;

public sealed class RuncPauseFixture : AgentFixture;
public sealed class GvisorPauseFixture : AgentFixture;

/// <summary>Pausing and resuming real sessions — runc (cgroup freezer) and gVisor (runsc pause) — with a run in progress.</summary>
public abstract class PauseTestsBase(AgentFixture fixture, string runtime, ITestOutputHelper output)
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(90);

    protected Agent Agent => fixture.Agent;

    // Writes and prints a counter every 100 ms until the host creates the stop file (or ~5 min pass).
    private const string Counter = """
        import os, time
        i = 0
        while not os.path.exists('/home/work/stop') and i < 3000:
            i += 1
            with open('/home/work/counter.tmp', 'w') as f:
                f.write(str(i))
            os.replace('/home/work/counter.tmp', '/home/work/counter.txt')
            print(i, flush=True)
            time.sleep(0.1)
        print('stopped', flush=True)
        """;

    private static int ReadCounter(Session session)
    {
        var path = Path.Combine(session.Record.ScratchDir, "work", "counter.txt");
        return File.Exists(path) ? int.Parse(File.ReadAllText(path), CultureInfo.InvariantCulture) : 0;
    }

    private static async Task WaitForAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Generous;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"timed out waiting for {what}");
            await Task.Delay(100);
        }
    }

    private static async Task<SessionEvent> NextEventAsync(IAsyncEnumerator<SessionEvent> events, string kernelId, string kind)
    {
        while (true)
        {
            var next = events.MoveNextAsync().AsTask();
            if (await Task.WhenAny(next, Task.Delay(Generous)) != next || !await next)
                throw new TimeoutException($"no '{kind}' event for {kernelId}");
            if (events.Current.KernelId == kernelId && events.Current.Kind == kind)
                return events.Current;
        }
    }

    [Fact]
    public async Task A_paused_session_stops_its_counter_refuses_executes_keeps_its_state_and_continues_after_resume()
    {
        using var subscription = Agent.Subscribe();
        await using var events = subscription.ReadAllAsync().GetAsyncEnumerator();
        var session = await Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime });
        try
        {
            await SessionCode.RunAsync(Agent, session, "state = 'kept'");

            // The counter run streams in the background; its output is what the test checks for gaps later.
            var printed = new ConcurrentQueue<string>();
            var run = Task.Run(async () =>
            {
                var stdout = new System.Text.StringBuilder();
                await foreach (var e in Agent.ExecuteAsync(session.KernelId, "counter", ExecutionMode.Query, Counter,
                    new ExecutionOptions { FlushTimeout = Generous }))
                {
                    switch (e)
                    {
                        case OutputEvent { Item.Kind: "stdout" } o:
                            stdout.Append(o.Item.Data);
                            foreach (var line in o.Item.Data.Split('\n', StringSplitOptions.RemoveEmptyEntries))
                                printed.Enqueue(line);
                            break;
                        case ResultEvent r:
                            return (r.Result, stdout.ToString());
                    }
                }
                throw new InvalidOperationException("the counter run produced no result");
            });
            await WaitForAsync(() => ReadCounter(session) >= 5 || run.IsCompleted, "the counter to reach 5");
            Assert.False(run.IsCompleted, "the counter run ended early");

            var paused = await Agent.PauseSessionAsync(session.KernelId);
            Assert.Same(session, paused);
            Assert.Equal(SessionState.Paused, session.State);
            Assert.Equal(SessionState.Paused, (await NextEventAsync(events, session.KernelId, "paused")).State);
            Assert.Equal(TaskStatus.Paused, (await Agent.Containerd.Tasks.GetAsync(session.Record.ContainerId)).Status);
            // Pausing again changes nothing.
            await Agent.PauseSessionAsync(session.KernelId);
            Assert.Equal(SessionState.Paused, session.State);

            // Frozen: over ~2 s, neither the file nor the streamed output moves.
            await Task.Delay(500);
            var fileAtPause = ReadCounter(session);
            var printedAtPause = printed.Count;
            await Task.Delay(2000);
            output.WriteLine($"counter at pause {fileAtPause}, printed {printedAtPause}; 2 s later {ReadCounter(session)}, printed {printed.Count}");
            Assert.Equal(fileAtPause, ReadCounter(session));
            Assert.Equal(printedAtPause, printed.Count);
            Assert.False(run.IsCompleted);

            // An execute (and an interrupt) is refused at once, saying why.
            var refused = Assert.Throws<SessionPausedException>(() => Agent.ExecuteAsync(session.KernelId, "while-paused", ExecutionMode.Query, "print(1)"));
            Assert.Contains("paused", refused.Message, StringComparison.Ordinal);
            Assert.Contains("resume", refused.Message, StringComparison.Ordinal);
            await Assert.ThrowsAsync<SessionPausedException>(() => Agent.InterruptAsync(session.KernelId));
            // Stats still sample a paused session.
            Assert.Equal(session.KernelId, (await Agent.GetStatsAsync(session.KernelId)).KernelId);

            await Agent.ResumeSessionAsync(session.KernelId);
            Assert.Equal(SessionState.Running, session.State);
            Assert.Equal(SessionState.Running, (await NextEventAsync(events, session.KernelId, "resumed")).State);
            Assert.Equal(TaskStatus.Running, (await Agent.Containerd.Tasks.GetAsync(session.Record.ContainerId)).Status);
            await WaitForAsync(() => ReadCounter(session) >= fileAtPause + 5, "the counter to continue after the resume");

            await File.WriteAllTextAsync(Path.Combine(session.Record.ScratchDir, "work", "stop"), "");
            var (result, stdout) = await run.WaitAsync(Generous);
            Assert.Equal(ExecutionStatus.Finished, result.Status);
            // The same run went on: every number once, in order, then its end.
            var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("stopped", lines[^1]);
            var numbers = lines[..^1].Select(l => int.Parse(l, CultureInfo.InvariantCulture)).ToList();
            Assert.Equal(Enumerable.Range(1, numbers.Count), numbers);
            Assert.True(numbers.Count >= fileAtPause + 5);

            // The interpreter's state survived the pause.
            Assert.Equal("kept\n", await SessionCode.RunAsync(Agent, session, "print(state)"));

            // A paused session can still be destroyed (the task is thawed to be killed).
            await Agent.PauseSessionAsync(session.KernelId);
            await Agent.DestroySessionAsync(session.KernelId);
            Assert.Equal(SessionState.Destroyed, session.State);
            Assert.Null(await Agent.Containerd.Containers.FindAsync(session.Record.ContainerId));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Committing_a_paused_session_leaves_it_paused()
    {
        var name = $"kata-agent-test/pause-commit:{Guid.NewGuid().ToString("N")[..8]}";
        var session = await Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime });
        try
        {
            await SessionCode.RunAsync(Agent, session, "open('/home/work/x.txt', 'w').write('x')\nkept = 7");
            await Agent.PauseSessionAsync(session.KernelId);
            var committed = await Agent.CommitAsync(session.KernelId, name);
            // The committer froze nothing itself, so it thawed nothing: the user's pause stands.
            Assert.Equal(TimeSpan.Zero, committed.PausedFor);
            Assert.Equal(SessionState.Paused, session.State);
            Assert.Equal(TaskStatus.Paused, (await Agent.Containerd.Tasks.GetAsync(session.Record.ContainerId)).Status);
            await Agent.ResumeSessionAsync(session.KernelId);
            Assert.Equal("7\n", await SessionCode.RunAsync(Agent, session, "print(kept)"));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
            if (await Agent.Containerd.Images.FindAsync(name) is not null)
                await Agent.Containerd.Images.DeleteAsync(name, sync: true);
        }
    }

    [Fact]
    public async Task A_paused_session_is_recovered_paused_after_an_agent_restart()
    {
        var session = await Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime });
        var kernelId = session.KernelId;
        try
        {
            await SessionCode.RunAsync(Agent, session, "kept = 'across the restart'");
            await Agent.PauseSessionAsync(kernelId);
            await fixture.RestartAgentAsync();
            var recovered = Agent.GetSession(kernelId);
            Assert.Equal(SessionState.Paused, recovered.State);
            Assert.Throws<SessionPausedException>(() => Agent.ExecuteAsync(kernelId, "refused", ExecutionMode.Query, "print(kept)"));
            await Agent.ResumeSessionAsync(kernelId);
            Assert.Equal("across the restart\n", await SessionCode.RunAsync(Agent, recovered, "print(kept)"));
        }
        finally
        {
            await Agent.DestroySessionAsync(kernelId);
        }
    }

    [Fact]
    public async Task Resuming_a_running_session_changes_nothing_and_an_unknown_session_is_not_found()
    {
        var session = await Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime });
        try
        {
            await Agent.ResumeSessionAsync(session.KernelId);
            Assert.Equal(SessionState.Running, session.State);
            Assert.Equal("2\n", await SessionCode.RunAsync(Agent, session, "print(1 + 1)"));
            await Assert.ThrowsAsync<SessionNotFoundException>(() => Agent.PauseSessionAsync("no-such-session"));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }
}

public sealed class RuncPauseTests(RuncPauseFixture fixture, ITestOutputHelper output)
    : PauseTestsBase(fixture, "runc", output), IClassFixture<RuncPauseFixture>;

public sealed class GvisorPauseTests(GvisorPauseFixture fixture, ITestOutputHelper output)
    : PauseTestsBase(fixture, "gvisor", output), IClassFixture<GvisorPauseFixture>;
