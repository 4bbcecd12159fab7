using KataAgent.Core.Sessions;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core;

/// <summary>
/// Pausing and resuming a session: containerd's task pause, which freezes the container's cgroup on runc, stops the
/// whole sandbox on gVisor (runsc pause) and pauses the VM's containers on Kata. Every process in the session stops
/// where it is, so interpreter state and runs in progress survive; a run's output continues after the resume.
/// While paused, new executes and interrupts are refused with <see cref="SessionPausedException"/>.
/// </summary>
public sealed partial class Agent
{
    /// <summary>
    /// Freezes the session. Idempotent (pausing a paused session changes nothing); a session that is not running is
    /// refused. Publishes a "paused" event.
    /// </summary>
    public Task<Session> PauseSessionAsync(string kernelId, CancellationToken cancellationToken = default) =>
        SetPausedAsync(kernelId, paused: true, cancellationToken);

    /// <summary>Thaws a paused session. Idempotent (resuming a running session changes nothing). Publishes a "resumed" event.</summary>
    public Task<Session> ResumeSessionAsync(string kernelId, CancellationToken cancellationToken = default) =>
        SetPausedAsync(kernelId, paused: false, cancellationToken);

    private async Task<Session> SetPausedAsync(string kernelId, bool paused, CancellationToken cancellationToken)
    {
        var session = GetSession(kernelId);
        return await WhileFrozenGateHeldAsync(session, async () =>
        {
            var state = session.State;
            if (state == (paused ? SessionState.Paused : SessionState.Running))
                return session;
            if (state is not (SessionState.Running or SessionState.Paused))
            {
                throw new SessionRequestException($"session {kernelId} is {state.ToString().ToLowerInvariant()}: " +
                    $"only a running session can be {(paused ? "paused" : "resumed")}");
            }
            var id = session.Record.ContainerId;
            if (paused)
                await Containerd.Tasks.PauseAsync(id, cancellationToken).ConfigureAwait(false);
            else
                await Containerd.Tasks.ResumeAsync(id, cancellationToken).ConfigureAwait(false);
            // False when the task ended meanwhile: then the exit is the news, not the pause.
            if (session.TrySetPaused(paused))
            {
                _logger.LogInformation("session {KernelId} {Change}", kernelId, paused ? "paused" : "resumed");
                _registry.Publish(new SessionEvent(kernelId, paused ? "paused" : "resumed", session.State, null, DateTimeOffset.UtcNow));
            }
            return session;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Pause, resume and commit each freeze or thaw the task: one at a time per session, so none undoes another.</summary>
    private static async Task<T> WhileFrozenGateHeldAsync<T>(Session session, Func<Task<T>> action, CancellationToken cancellationToken)
    {
        await session.FreezeGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return await action().ConfigureAwait(false);
        }
        finally
        {
            session.FreezeGate.Release();
        }
    }

    private static void RefuseIfPaused(Session session)
    {
        if (session.State == SessionState.Paused)
            throw new SessionPausedException(session.KernelId);
    }
}
