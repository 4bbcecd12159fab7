using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;

namespace KataAgent.Core.Tests;

/// <summary>Short timeouts for the timeout tests: an 8 s idle default, checked every 200 ms, warned 3 s ahead.</summary>
public class TimeoutAgentFixture : AgentFixture
{
    public static readonly TimeSpan DefaultIdle = TimeSpan.FromSeconds(8);

    protected override AgentOptions Configure(AgentOptions options) => options with
    {
        DefaultIdleTimeout = DefaultIdle,
        TimeoutCheckInterval = TimeSpan.FromMilliseconds(200),
        TimeoutWarningLead = TimeSpan.FromSeconds(3),
    };
}

public sealed class RuncTimeoutFixture : TimeoutAgentFixture;
public sealed class GvisorTimeoutFixture : TimeoutAgentFixture;

/// <summary>
/// Idle timeout, maximum lifetime (with extend) and the session-level exec timeout, each produced for real on a live
/// session and checked on the event stream, on the tombstone (GetSession, execute) and, for the lifetime, as the end
/// of an execute that was waiting.
/// </summary>
public abstract class SessionTimeoutTestsBase(TimeoutAgentFixture fixture, string runtime)
{
    private Agent Agent => fixture.Agent;

    private Task<Session> CreateAsync(TimeSpan? idle = null, TimeSpan? lifetime = null, TimeSpan? exec = null) =>
        Agent.CreateSessionAsync(new SessionRequest
        {
            Image = fixture.ImageName,
            RuntimeClass = runtime,
            IdleTimeout = idle,
            MaxLifetime = lifetime,
            ExecTimeout = exec,
        });

    private async Task<ExecutionResult> RunAsync(Session session, string code, TimeSpan? ownLimit = null)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        return await RunEvents.CollectAsync(Agent.ExecuteAsync(session.KernelId, "run-" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
            new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30), ExecTimeout = ownLimit }, timeout.Token));
    }

    private void AssertTombstone(string kernelId, string name)
    {
        Assert.Equal(name, Agent.FindEndedSession(kernelId)?.EndReason.Name);
        var e = Assert.Throws<SessionEndedException>(() => Agent.GetSession(kernelId));
        Assert.EndsWith(": " + name, e.Message, StringComparison.Ordinal);
        Assert.Throws<SessionEndedException>(() => Agent.ExecuteAsync(kernelId, "late", ExecutionMode.Query, "1"));
    }

    [Fact]
    public async Task An_idle_session_is_warned_then_ends_idle_timeout_but_not_while_a_run_goes_on()
    {
        var session = await CreateAsync();
        try
        {
            Assert.Equal(TimeoutAgentFixture.DefaultIdle, session.Timeouts.Idle);
            using var events = new SessionEventLog(Agent);
            var warning = events.WaitForAsync(session.KernelId, "idle-warning");
            var destroyed = events.WaitForAsync(session.KernelId, "destroyed");
            // A run longer than the idle timeout is activity all along.
            var result = await RunAsync(session, "import time\ntime.sleep(12)\nprint('slept')");
            Assert.Equal(ExecutionStatus.Finished, result.Status);
            Assert.Contains(result.Console, c => c.Data.Contains("slept", StringComparison.Ordinal));
            var lastActivity = session.LastActivity;
            Assert.Same(session, Agent.GetSession(session.KernelId));

            var warned = await warning;
            Assert.Contains("idle-timeout in ", warned.Detail, StringComparison.Ordinal);
            var e = await destroyed;
            Assert.Equal("idle-timeout", e.EndReason?.Name);
            Assert.True(e.At - lastActivity >= TimeoutAgentFixture.DefaultIdle, $"ended {e.At - lastActivity} after the last activity");
            Assert.True(warned.At <= e.At);
            AssertTombstone(session.KernelId, "idle-timeout");
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_paused_session_does_not_go_idle()
    {
        var session = await CreateAsync(idle: TimeSpan.FromSeconds(4));
        try
        {
            using var events = new SessionEventLog(Agent);
            var destroyed = events.WaitForAsync(session.KernelId, "destroyed");
            await Agent.PauseSessionAsync(session.KernelId);
            await Task.Delay(TimeSpan.FromSeconds(10));
            Assert.Equal(SessionState.Paused, Agent.GetSession(session.KernelId).State);
            var resumedAt = DateTimeOffset.UtcNow;
            await Agent.ResumeSessionAsync(session.KernelId);
            var e = await destroyed;
            Assert.Equal("idle-timeout", e.EndReason?.Name);
            Assert.True(e.At - resumedAt >= TimeSpan.FromSeconds(3), $"ended {e.At - resumedAt} after the resume");
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task The_lifetime_ends_the_session_after_its_extension_and_a_waiting_execute_says_so()
    {
        var session = await CreateAsync(idle: TimeSpan.Zero, lifetime: TimeSpan.FromSeconds(30));
        try
        {
            Assert.Null(session.IdleDeadline);
            using var events = new SessionEventLog(Agent);
            var extended = events.WaitForAsync(session.KernelId, "extended");
            var warning = events.WaitForAsync(session.KernelId, "lifetime-warning");
            var destroyed = events.WaitForAsync(session.KernelId, "destroyed");
            // A slow create (gVisor on a busy machine) may eat the 20 s: extend to at least 15 s from now, so the
            // warning (3 s ahead) has room before the end.
            var by = session.Record.CreatedAt + TimeSpan.FromSeconds(30) is var end && end - DateTimeOffset.UtcNow < TimeSpan.FromSeconds(10)
                ? DateTimeOffset.UtcNow + TimeSpan.FromSeconds(15) - end
                : TimeSpan.FromSeconds(5);
            await Agent.ExtendSessionAsync(session.KernelId, by);
            await extended;
            var deadline = end + by;
            Assert.Equal(deadline, session.LifetimeDeadline);
            await Assert.ThrowsAsync<SessionRequestException>(() => Agent.ExtendSessionAsync(session.KernelId, TimeSpan.Zero));

            // Waits across the end: the execute ends naming the reason, not with "lost the connection".
            var waiting = await Assert.ThrowsAsync<SessionEndedDuringRunException>(() => RunAsync(session, "import time\ntime.sleep(600)"));
            Assert.Equal("lifetime-expired", waiting.Reason.Name);
            Assert.Contains("ended during run", waiting.Message, StringComparison.Ordinal);

            Assert.True((await warning).At < deadline);
            var e = await destroyed;
            Assert.Equal("lifetime-expired", e.EndReason?.Name);
            Assert.True(e.At >= deadline, $"ended at {e.At:O}, before the extended deadline {deadline:O}");
            AssertTombstone(session.KernelId, "lifetime-expired");
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_run_past_the_session_exec_timeout_ends_the_session_but_a_runs_own_limit_only_stops_the_run()
    {
        var session = await CreateAsync(idle: TimeSpan.Zero, exec: TimeSpan.FromSeconds(6));
        try
        {
            var ownLimit = await RunAsync(session, "import time\ntime.sleep(60)", ownLimit: TimeSpan.FromSeconds(2));
            Assert.Equal(ExecutionStatus.ExecTimeout, ownLimit.Status);
            Assert.Null(session.EndReason);
            Assert.Equal("4", RunEvents.Out(await RunAsync(session, "print(2 + 2)")).Trim());

            using var events = new SessionEventLog(Agent);
            var destroyed = events.WaitForAsync(session.KernelId, "destroyed");
            var sessionLimit = await RunAsync(session, "import time\ntime.sleep(60)");
            Assert.Equal(ExecutionStatus.ExecTimeout, sessionLimit.Status);
            var e = await destroyed;
            Assert.Equal("exec-timeout", e.EndReason?.Name);
            AssertTombstone(session.KernelId, "exec-timeout");
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Bad_timeouts_are_refused_before_anything_is_created()
    {
        var e = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(idle: TimeSpan.FromSeconds(-1)));
        Assert.Contains("idle timeout", e.Message, StringComparison.Ordinal);
    }
}

public sealed class RuncSessionTimeoutTests(RuncTimeoutFixture fixture)
    : SessionTimeoutTestsBase(fixture, "runc"), IClassFixture<RuncTimeoutFixture>
{
}

public sealed class GvisorSessionTimeoutTests(GvisorTimeoutFixture fixture)
    : SessionTimeoutTestsBase(fixture, "gvisor"), IClassFixture<GvisorTimeoutFixture>
{
}
