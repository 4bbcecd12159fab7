using KataAgent.BackendAi.Kernels;
using KataAgent.Core.Sessions;

namespace KataAgent.BackendAi.Tests.Kernels;

/// <summary>Our typed end reasons (docs/END-REASONS.md) as kernel_terminated's KernelLifecycleEventReason.</summary>
public sealed class KernelLifecycleReasonsTests
{
    private static readonly DateTimeOffset At = DateTimeOffset.UnixEpoch;

    public static TheoryData<SessionEndReason, string> Ends() => new()
    {
        { new SessionEndReason(SessionEndKind.Exited, At) { ExitCode = 3 }, "self-terminated" },
        { new SessionEndReason(SessionEndKind.Signaled, At) { ExitCode = 143, Signal = 15 }, "self-terminated" },
        { SessionEndReason.OomKilled(1L << 30, At), "self-terminated" },
        { new SessionEndReason(SessionEndKind.SandboxDied, At), "self-terminated" },
        { new SessionEndReason(SessionEndKind.AgentLost, At), "self-terminated" },
        { new SessionEndReason(SessionEndKind.ExecTimeout, At), "exec-timeout" },
        { new SessionEndReason(SessionEndKind.IdleTimeout, At), "idle-timeout" },
        { new SessionEndReason(SessionEndKind.LifetimeExpired, At), "idle-session-lifetime" },
        { new SessionEndReason(SessionEndKind.Destroyed, At) { By = DestroyedBy.Api }, "user-requested" },
        { new SessionEndReason(SessionEndKind.Destroyed, At) { By = DestroyedBy.Manager }, "user-requested" },
        { new SessionEndReason(SessionEndKind.Destroyed, At) { By = DestroyedBy.Reconcile }, "container-not-found" },
        { new SessionEndReason(SessionEndKind.CreateFailed, At) { Step = "start task" }, "failed-to-create" },
    };

    [Theory]
    [MemberData(nameof(Ends))]
    public void EveryEndKind_HasBackendAisReason(SessionEndReason end, string expected) =>
        Assert.Equal(expected, KernelLifecycleReasons.FromEndReason(end));

    [Fact]
    public void EveryEndKind_IsCovered_AndNoneFallsToUnknown()
    {
        // A kind added to Core without a Backend.AI reason would reach the manager as "unknown": this fails first.
        var covered = Ends().Select(row => ((SessionEndReason)row[0]).Kind).ToHashSet();
        Assert.Equal(Enum.GetValues<SessionEndKind>().ToHashSet(), covered);
        foreach (var kind in Enum.GetValues<SessionEndKind>())
            Assert.NotEqual("unknown", KernelLifecycleReasons.FromEndReason(new SessionEndReason(kind, At)));
        Assert.Equal("unknown", KernelLifecycleReasons.FromEndReason(null));
    }
}
