using KataAgent.Core.Registry;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Core.Tests;

/// <summary>How exit statuses, OOM and destroys map onto end reasons, and how long tombstones are kept (no containerd).</summary>
public sealed class SessionEndReasonMappingTests
{
    private static readonly DateTimeOffset At = new(2026, 1, 2, 3, 4, 5, TimeSpan.Zero);

    [Theory]
    [InlineData(0, false, "exited", "exited (code 0)")]
    [InlineData(3, false, "exited", "exited (code 3)")]
    [InlineData(3, true, "exited", "exited (code 3)")] // an OOM in the cgroup that did not kill PID 1
    [InlineData(128, false, "exited", "exited (code 128)")]
    [InlineData(137, false, "signaled", "signaled (signal 9)")]
    [InlineData(143, false, "signaled", "signaled (signal 15)")]
    [InlineData(143, true, "signaled", "signaled (signal 15)")]
    [InlineData(137, true, "oom-killed", "oom-killed (limit 256 MiB)")]
    [InlineData(255, false, "exited", "exited (code 255)")]
    public void Exit_statuses_map_to_exited_signaled_or_oom_killed(int status, bool oom, string kind, string description)
    {
        var reason = SessionEndReason.FromExitStatus(status, oom, 256L << 20, At);
        Assert.Equal(kind, reason.Name);
        Assert.Equal(description, reason.Describe());
        Assert.Equal(status, reason.ExitCode);
        Assert.Equal(At, reason.At);
    }

    [Fact]
    public void A_task_gone_without_an_exit_status_is_sandbox_died()
    {
        Assert.Equal("sandbox-died", SessionEndReason.FromExitStatus((int?)null, false, 1L << 30, At).Describe());
    }

    [Fact]
    public void Every_kind_has_its_wire_name_and_details_read_well()
    {
        Assert.Equal(
            ["exited", "signaled", "oom-killed", "sandbox-died", "exec-timeout", "idle-timeout", "lifetime-expired", "destroyed", "agent-lost", "create-failed"],
            Enum.GetValues<SessionEndKind>().Select(SessionEndReason.KindName));
        Assert.Equal("destroyed (by reconcile)", SessionEndReason.Destroyed(DestroyedBy.Reconcile, At).Describe());
        Assert.Equal("create-failed (at step network)", SessionEndReason.CreateFailed("network", At).Describe());
        Assert.Equal("agent-lost (exit status 137)", SessionEndReason.AgentLost(137, At).Describe());
        Assert.Equal("oom-killed (limit 1.5 GiB)", SessionEndReason.OomKilled(3L << 29, At).Describe());
        Assert.Equal("ended 3 min ago: oom-killed (limit 1 GiB)", SessionEndReason.OomKilled(1L << 30, At).DescribeAgo(At.AddSeconds(200)));
    }

    [Fact]
    public async Task The_end_reason_is_set_once_and_a_late_oom_event_refines_a_sigkill()
    {
        await using var session = new Session(Record("k1"), NewRunner());
        Assert.Null(session.EndReason);
        var killed = session.SetEndReason(SessionEndReason.FromExitStatus(137, false, session.Record.MemoryBytes, At));
        Assert.Equal("signaled", killed.Name);
        // Later causes do not overwrite it.
        Assert.Same(killed, session.SetEndReason(SessionEndReason.Destroyed(DestroyedBy.Api, At)));
        var refined = session.RefineAfterOutOfMemory();
        Assert.Equal("oom-killed (limit 1 GiB)", refined?.Describe());
        Assert.Equal(9, refined?.Signal);
        Assert.Equal("oom-killed", session.EndReason?.Name);

        await using var exited = new Session(Record("k2"), NewRunner());
        exited.SetEndReason(SessionEndReason.FromExitStatus(0, false, 1L << 30, At));
        Assert.Null(exited.RefineAfterOutOfMemory());
        Assert.Equal("exited", exited.EndReason?.Name);
    }

    [Fact]
    public void Tombstones_answer_with_their_end_and_are_bounded_in_count_and_age()
    {
        var registry = new SessionRegistry(NullLogger.Instance, TimeSpan.FromHours(1), endedMaxCount: 2);
        var now = DateTimeOffset.UtcNow;
        registry.AddEnded(Tombstone("old", now.AddHours(-2)));
        Assert.Null(registry.FindEnded("old")); // past the retention
        registry.AddEnded(Tombstone("a", now.AddMinutes(-3)));
        registry.AddEnded(Tombstone("b", now.AddMinutes(-2)));
        registry.AddEnded(Tombstone("c", now.AddMinutes(-1)));
        Assert.Equal(["b", "c"], registry.Ended.Select(t => t.KernelId));

        var e = Assert.Throws<SessionEndedException>(() => registry.Get("b"));
        Assert.Equal("session b ended 2 min ago: oom-killed (limit 1 GiB)", e.Message);
        Assert.Throws<SessionNotFoundException>(() => registry.Get("a"));

        var off = new SessionRegistry(NullLogger.Instance, TimeSpan.Zero, 10);
        off.AddEnded(Tombstone("x", now));
        Assert.Throws<SessionNotFoundException>(() => off.Get("x"));
    }

    private static SessionTombstone Tombstone(string kernelId, DateTimeOffset at) =>
        new(Record(kernelId), SessionEndReason.OomKilled(1L << 30, at), 137, true);

    private static SessionRecord Record(string kernelId) => new()
    {
        KernelId = kernelId,
        SessionId = "s-" + kernelId,
        ContainerId = kernelId,
        Image = "img",
        RuntimeClass = "runc",
        Cpus = 1,
        MemoryBytes = 1L << 30,
        ShmBytes = 64 << 20,
        Ports = [],
        Request = new SessionRequest { Image = "img" },
    };

    private static KernelRunnerClient NewRunner() => new(new KernelRunnerClientOptions { InputPort = 1, OutputPort = 2 });
}
