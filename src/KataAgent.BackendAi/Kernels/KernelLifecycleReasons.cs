using KataAgent.Core.Sessions;

namespace KataAgent.BackendAi.Kernels;

/// <summary>Backend.AI's KernelLifecycleEventReason values (BA25 common/events/event_types/kernel/types.py) we send.</summary>
public static class KernelLifecycleReasons
{
    public const string AlreadyTerminated = "already-terminated";
    public const string ExecTimeout = "exec-timeout";
    public const string FailedToCreate = "failed-to-create";
    public const string IdleTimeout = "idle-timeout";
    public const string IdleSessionLifetime = "idle-session-lifetime";
    public const string SelfTerminated = "self-terminated";
    public const string TaskFailed = "task-failed";
    public const string TaskTimeout = "task-timeout";
    public const string TaskFinished = "task-finished";
    public const string UserRequested = "user-requested";
    public const string NotFoundInManager = "not-found-in-manager";
    public const string ContainerNotFound = "container-not-found";
    public const string AgentReset = "agent-reset";
    public const string Restarting = "restarting";

    /// <summary>
    /// Our typed end reason as the manager names it. A session that ended by itself (exit, signal, OOM kill, a sandbox
    /// that died) is self-terminated, as Backend.AI reports a container that died; the exit code tells them apart.
    /// </summary>
    public static string FromEndReason(SessionEndReason? reason) => reason?.Kind switch
    {
        SessionEndKind.Exited or SessionEndKind.Signaled or SessionEndKind.OomKilled or SessionEndKind.SandboxDied => SelfTerminated,
        SessionEndKind.ExecTimeout => ExecTimeout,
        SessionEndKind.IdleTimeout => IdleTimeout,
        SessionEndKind.LifetimeExpired => IdleSessionLifetime,
        SessionEndKind.Destroyed when reason.By == DestroyedBy.Reconcile => ContainerNotFound,
        SessionEndKind.Destroyed => UserRequested,
        SessionEndKind.AgentLost => SelfTerminated,
        SessionEndKind.CreateFailed => FailedToCreate,
        _ => "unknown",
    };
}
