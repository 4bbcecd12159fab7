using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Core.Tests;

public sealed class RuncEndReasonFixture : AgentFixture;
public sealed class GvisorEndReasonFixture : AgentFixture;

/// <summary>
/// End reasons produced for real (docs/END-REASONS.md): each on the event stream, on the session, and on its
/// tombstone after it is gone (GetSession and execute answer with it instead of "no session").
/// </summary>
public abstract class SessionEndReasonSessionTestsBase(AgentFixture fixture, string runtime)
{
    private Agent Agent => fixture.Agent;

    private Task<Session> CreateAsync(long? memoryBytes = null) =>
        Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime, MemoryBytes = memoryBytes });

    private async Task<ExecutionResult> RunAsync(Session session, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        return await RunEvents.CollectAsync(Agent.ExecuteAsync(session.KernelId, "run-" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
            new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) }, timeout.Token));
    }

    /// <summary>After destroy the session is a tombstone: found with its reason, and every call on it says how it ended.</summary>
    private async Task AssertTombstoneAsync(string kernelId, string kind, string description)
    {
        var tombstone = Agent.FindEndedSession(kernelId);
        Assert.NotNull(tombstone);
        Assert.Equal(kind, tombstone.EndReason.Name);
        Assert.Equal(description, tombstone.EndReason.Describe());
        var e = Assert.Throws<SessionEndedException>(() => Agent.GetSession(kernelId));
        Assert.Contains($"session {kernelId} ended ", e.Message, StringComparison.Ordinal);
        Assert.EndsWith(": " + description, e.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<SessionEndedException>(() => RunEvents.CollectAsync(Agent.ExecuteAsync(kernelId, "late", ExecutionMode.Query, "1", null, CancellationToken.None)));
        Assert.DoesNotContain(Agent.Sessions, s => s.KernelId == kernelId);
    }

    [Fact]
    public async Task A_task_killed_from_the_host_ends_signaled_and_keeps_that_reason_past_destroy()
    {
        var session = await CreateAsync();
        try
        {
            using var events = new SessionEventLog(Agent);
            var exited = events.WaitForAsync(session.KernelId, "exited");
            var waiting = RunAsync(session, "import time\nprint('started', flush=True)\ntime.sleep(600)");
            await Eventually.WaitAsync(() => session.Runner.ActiveRunId is not null, "the run to start", TimeSpan.FromSeconds(60));
            await Agent.Containerd.Tasks.KillAsync(session.Record.ContainerId, 9, all: true);
            var e = await exited;
            // The execute that was waiting ends with the session's end reason, not the runner's lost connection.
            var ended = await Assert.ThrowsAsync<SessionEndedDuringRunException>(() => waiting);
            Assert.Equal("signaled (signal 9)", ended.Reason.Describe());
            Assert.Equal("signaled (signal 9)", e.EndReason?.Describe());
            Assert.Equal(9, e.EndReason?.Signal);
            Assert.Equal("signaled", session.EndReason?.Name);

            var destroyed = events.WaitForAsync(session.KernelId, "destroyed");
            await Agent.DestroySessionAsync(session.KernelId);
            // A session that had already ended keeps its own reason: destroy only cleaned up.
            Assert.Equal("signaled", (await destroyed).EndReason?.Name);
            await AssertTombstoneAsync(session.KernelId, "signaled", "signaled (signal 9)");
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_runner_stopped_from_inside_ends_exited_with_its_code()
    {
        var session = await CreateAsync();
        try
        {
            using var events = new SessionEventLog(Agent);
            var exited = events.WaitForAsync(session.KernelId, "exited");
            // The runner (PID 1) stops on SIGTERM and exits 0 (src/KataAgent.Runner/README.md); the run itself is cut short.
            var waiting = await Assert.ThrowsAsync<SessionEndedDuringRunException>(
                () => RunAsync(session, "import os, signal\nos.kill(1, signal.SIGTERM)\nimport time\ntime.sleep(60)"));
            Assert.Equal("exited (code 0)", waiting.Reason.Describe());
            var e = await exited;
            Assert.Equal("exited (code 0)", e.EndReason?.Describe());
            Assert.Equal(0, e.ExitCode);
            Assert.Equal(SessionState.Exited, session.State);
            // Before the destroy too, an execute says how the session ended.
            var late = await Assert.ThrowsAsync<SessionEndedException>(() => RunAsync(session, "print(1)"));
            Assert.EndsWith(": exited (code 0)", late.Message, StringComparison.Ordinal);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
        await AssertTombstoneAsync(session.KernelId, "exited", "exited (code 0)");
    }

    [Fact]
    public async Task Killing_the_shim_from_the_host_ends_sandbox_died_not_signaled()
    {
        var session = await CreateAsync();
        try
        {
            var shim = Assert.Single(Diagnostics.SandboxProcess.FindFor(Agent.Options.Namespace, session.Record.ContainerId),
                p => p.Role == Diagnostics.SandboxProcess.ShimRole);
            using var events = new SessionEventLog(Agent);
            var exited = events.WaitForAsync(session.KernelId, "exited");
            var waiting = RunAsync(session, "import time\nprint('started', flush=True)\ntime.sleep(600)");
            await Eventually.WaitAsync(() => session.Runner.ActiveRunId is not null, "the run to start", TimeSpan.FromSeconds(60));
            System.Diagnostics.Process.GetProcessById(shim.Pid).Kill();
            var e = await exited;
            Assert.Equal("sandbox-died", e.EndReason?.Name);
            Assert.Equal($"sandbox-died (shim pid {shim.Pid} gone)", e.EndReason?.Describe());
            var ended = await Assert.ThrowsAsync<SessionEndedDuringRunException>(() => waiting);
            Assert.Equal("sandbox-died", ended.Reason.Name);
            await Agent.DestroySessionAsync(session.KernelId);
            await AssertTombstoneAsync(session.KernelId, "sandbox-died", $"sandbox-died (shim pid {shim.Pid} gone)");
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Destroying_a_running_session_ends_it_destroyed_by_the_api()
    {
        var session = await CreateAsync();
        using var events = new SessionEventLog(Agent);
        var destroyed = events.WaitForAsync(session.KernelId, "destroyed");
        await Agent.DestroySessionAsync(session.KernelId);
        var e = await destroyed;
        Assert.Equal("destroyed (by api)", e.EndReason?.Describe());
        Assert.Equal(SessionState.Destroyed, e.State);
        await AssertTombstoneAsync(session.KernelId, "destroyed", "destroyed (by api)");
    }
}

public sealed class RuncSessionEndReasonTests(RuncEndReasonFixture fixture)
    : SessionEndReasonSessionTestsBase(fixture, "runc"), IClassFixture<RuncEndReasonFixture>
{
}

public sealed class GvisorSessionEndReasonTests(GvisorEndReasonFixture fixture)
    : SessionEndReasonSessionTestsBase(fixture, "gvisor"), IClassFixture<GvisorEndReasonFixture>
{
}
