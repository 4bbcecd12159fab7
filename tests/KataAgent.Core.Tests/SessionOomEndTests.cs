using System.Text.RegularExpressions;
using KataAgent.Core.Diagnostics;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Core.Tests;

public sealed class RuncOomEndFixture : AgentFixture;
public sealed class GvisorOomEndFixture : AgentFixture;

/// <summary>
/// OOM and a killed sandbox produced for real (docs/END-REASONS.md): an allocation past a small memory limit ends the
/// whole session oom-killed with the limit, whichever process the OOM killer picked; gVisor's sandbox process killed from
/// the host ends it sandbox-died. Each end is checked on the event stream, on the waiting execute, on the session
/// (GetSession, a later execute) and on its tombstone after the destroy.
/// </summary>
public abstract class SessionOomEndTestsBase(AgentFixture fixture, string runtime)
{
    private const long SmallLimit = 128L << 20;

    // Touched pages (bytes * n fills them): calloc'ed zero pages would not count against the limit.
    private const string Hog = "import time\nprint('hogging', flush=True)\nchunks = []\nwhile True:\n    chunks.append(b'\\x01' * (1 << 20))\n";

    protected Agent Agent => fixture.Agent;

    protected Task<Session> CreateAsync(long? memoryBytes = null, bool? endOnOutOfMemory = null) =>
        Agent.CreateSessionAsync(new SessionRequest
        {
            Image = fixture.ImageName, RuntimeClass = runtime, MemoryBytes = memoryBytes, EndOnOutOfMemory = endOnOutOfMemory,
        });

    protected async Task<ExecutionResult> RunAsync(Session session, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        return await RunEvents.CollectAsync(Agent.ExecuteAsync(session.KernelId, "run-" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
            new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) }, timeout.Token));
    }

    /// <summary>After the destroy: GetSession and execute answer with the end ("ended N s ago: REASON"), as `session show` does.</summary>
    protected async Task AssertTombstoneAsync(string kernelId, string description)
    {
        var tombstone = Agent.FindEndedSession(kernelId);
        Assert.NotNull(tombstone);
        Assert.Equal(description, tombstone.EndReason.Describe());
        Assert.Matches("^ended [0-9]+ s ago: " + Regex.Escape(description) + "$", tombstone.EndReason.DescribeAgo(DateTimeOffset.UtcNow));
        var e = Assert.Throws<SessionEndedException>(() => Agent.GetSession(kernelId));
        Assert.Matches($"^session {kernelId} ended [0-9]+ s ago: " + Regex.Escape(description) + "$", e.Message);
        await Assert.ThrowsAsync<SessionEndedException>(() => RunEvents.CollectAsync(Agent.ExecuteAsync(kernelId, "late", ExecutionMode.Query, "1", null, CancellationToken.None)));
    }

    [Fact]
    public async Task An_allocation_past_the_memory_limit_ends_the_session_oom_killed_with_the_limit()
    {
        var session = await CreateAsync(SmallLimit);
        try
        {
            using var events = new SessionEventLog(Agent);
            var exited = events.WaitForAsync(session.KernelId, "exited", TimeSpan.FromMinutes(3));
            var waiting = await Assert.ThrowsAsync<SessionEndedDuringRunException>(() => RunAsync(session, Hog));
            Assert.Equal("oom-killed (limit 128 MiB)", waiting.Reason.Describe());
            Assert.Equal(SmallLimit, waiting.Reason.MemoryLimitBytes);

            var e = await exited;
            Assert.Equal("oom-killed (limit 128 MiB)", e.EndReason?.Describe());
            Assert.Equal(SessionState.Exited, session.State);
            Assert.True(session.OutOfMemory);
            // Ended, not destroyed yet: the session says how, and so does an execute.
            Assert.Equal("oom-killed", Agent.GetSession(session.KernelId).EndReason?.Name);
            var late = await Assert.ThrowsAsync<SessionEndedException>(() => RunAsync(session, "print(1)"));
            Assert.EndsWith(": oom-killed (limit 128 MiB)", late.Message, StringComparison.Ordinal);

            var destroyed = events.WaitForAsync(session.KernelId, "destroyed");
            await Agent.DestroySessionAsync(session.KernelId);
            Assert.Equal("oom-killed (limit 128 MiB)", (await destroyed).EndReason?.Describe());
            await AssertTombstoneAsync(session.KernelId, "oom-killed (limit 128 MiB)");
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Staying_within_the_limit_does_not_end_the_session()
    {
        var session = await CreateAsync(SmallLimit);
        try
        {
            var result = await RunAsync(session, "b = b'\\x01' * (16 << 20)\nprint(len(b))");
            Assert.Equal((16 << 20).ToString(System.Globalization.CultureInfo.InvariantCulture), RunEvents.Out(result).Trim());
            Assert.Null(session.EndReason);
            Assert.False(session.OutOfMemory);
            Assert.Equal(SessionState.Running, session.State);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }
}

public sealed class RuncSessionOomEndTests(RuncOomEndFixture fixture)
    : SessionOomEndTestsBase(fixture, "runc"), IClassFixture<RuncOomEndFixture>
{
    /// <summary>Opted out: the OOM killer takes the interpreter only (runc), the session lives on and the run fails.</summary>
    [Fact]
    public async Task Opted_out_of_ending_on_OOM_only_the_interpreter_dies()
    {
        var session = await CreateAsync(128L << 20, endOnOutOfMemory: false);
        try
        {
            using var events = new SessionEventLog(Agent);
            var oom = events.WaitForAsync(session.KernelId, "oom", TimeSpan.FromMinutes(3));
            var result = await RunAsync(session, "chunks = []\nwhile True:\n    chunks.append(b'\\x01' * (1 << 20))\n");
            Assert.Equal(-9, result.ExitCode);
            var e = await oom;
            Assert.Null(e.EndReason);
            Assert.True(session.OutOfMemory);
            Assert.Null(session.EndReason);
            Assert.Equal(SessionState.Running, session.State);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }
}

public sealed class GvisorSessionOomEndTests(GvisorOomEndFixture fixture)
    : SessionOomEndTestsBase(fixture, "gvisor"), IClassFixture<GvisorOomEndFixture>
{
    /// <summary>gVisor's sandbox (the Sentry, runsc-sandbox) killed from the host while a run waits: sandbox-died, not signaled.</summary>
    [Fact]
    public async Task Killing_the_runsc_sandbox_from_the_host_ends_sandbox_died()
    {
        var session = await CreateAsync();
        try
        {
            var sandbox = Assert.Single(SandboxProcess.FindFor(Agent.Options.Namespace, session.Record.ContainerId),
                p => p.Role == SandboxProcess.RunscSandboxRole);
            using var events = new SessionEventLog(Agent);
            var exited = events.WaitForAsync(session.KernelId, "exited");
            var waiting = RunAsync(session, "import time\nprint('started', flush=True)\ntime.sleep(600)");
            await Eventually.WaitAsync(() => session.Runner.ActiveRunId is not null, "the run to start", TimeSpan.FromSeconds(60));
            System.Diagnostics.Process.GetProcessById(sandbox.Pid).Kill();
            var description = $"sandbox-died (runsc-sandbox pid {sandbox.Pid} killed by signal 9)";
            var e = await exited;
            Assert.Equal(description, e.EndReason?.Describe());
            var ended = await Assert.ThrowsAsync<SessionEndedDuringRunException>(() => waiting);
            Assert.Equal(description, ended.Reason.Describe());
            Assert.Equal(description, Agent.GetSession(session.KernelId).EndReason?.Describe());
            await Agent.DestroySessionAsync(session.KernelId);
            await AssertTombstoneAsync(session.KernelId, description);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }
}
