using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging;
using V1 = Io.Containerd.Cgroups.V1;
using V2 = Io.Containerd.Cgroups.V2;

namespace KataAgent.Core;

/// <summary>
/// OOM ends the session (docs/END-REASONS.md, "OOM"): which process the kernel's OOM killer picks differs by runtime (on
/// runc the interpreter, the runner as PID 1 lives on; on gVisor the sandbox itself), so by default the agent ends the
/// whole session oom-killed, with its memory limit, whatever was picked. Two ways lead here, whichever comes first:
/// containerd's OOM event for the task, and a run whose interpreter was SIGKILLed while the cgroup counts an OOM kill.
/// </summary>
public sealed partial class Agent
{
    private bool EndsOnOutOfMemory(Session session) => session.Record.Request?.EndOnOutOfMemory ?? Options.EndSessionOnOutOfMemory;

    /// <summary>
    /// Sets oom-killed (unless the session already ended), stops waiting runs and kills what is left of the task; returns
    /// the reason when this call ended the session, null otherwise.
    /// </summary>
    private SessionEndReason? EndOnOutOfMemory(Session session, DateTimeOffset at)
    {
        session.MarkOutOfMemory();
        if (!EndsOnOutOfMemory(session) || session.State is not (SessionState.Running or SessionState.Paused))
            return null;
        var reason = SessionEndReason.OomKilled(session.Record.MemoryBytes, at);
        if (!ReferenceEquals(session.SetEndReason(reason), reason))
            return null;
        _logger.LogWarning("session {KernelId} ends: {Reason}", session.KernelId, reason.Describe());
        session.SignalEnding();
        // The task's exit follows the kill and keeps this reason; the destroy stays with the owner (API, manager).
        _ = Task.Run(() => KillAfterOutOfMemoryAsync(session), CancellationToken.None);
        return reason;
    }

    private async Task KillAfterOutOfMemoryAsync(Session session)
    {
        try
        {
            await Containerd.Tasks.KillAsync(session.Record.ContainerId, 9, all: true, cancellationToken: _stop.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // Already gone (gVisor's OOM takes the sandbox itself): its exit event ends the session just the same.
            _logger.LogDebug("session {KernelId}: kill after OOM: {Message}", session.KernelId, e.Message);
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Publishes the "oom" event: with the end when it ended the session (or refined an earlier SIGKILL end).</summary>
    private void OnOutOfMemoryEvent(Session session, DateTimeOffset at)
    {
        // Null unless the exit came first: then the end it reported becomes oom-killed.
        session.MarkOutOfMemory();
        var ended = session.RefineAfterOutOfMemory() ?? EndOnOutOfMemory(session, at);
        _registry.Publish(new SessionEvent(session.KernelId, "oom", session.State, session.ExitCode, at, ended?.Describe(), ended));
    }

    /// <summary>
    /// A run's interpreter died of SIGKILL: when the session's cgroup counts an OOM kill, that was the OOM killer and the
    /// session ends oom-killed now (containerd's OOM event may come later, or not at all).
    /// </summary>
    private async Task<SessionEndReason?> EndIfKilledByOutOfMemoryAsync(Session session, ExecutionResult result, CancellationToken cancellationToken)
    {
        const int KilledBySigKill = -9;
        if (result.ExitCode != KilledBySigKill || !EndsOnOutOfMemory(session))
            return null;
        if (session.EndReason is { } already)
            return already;
        ulong? oomKills;
        try
        {
            var metrics = await Containerd.Tasks.MetricsAsync(cancellationToken, session.Record.ContainerId).ConfigureAwait(false);
            oomKills = metrics.Count == 0 ? null : metrics[0].Data switch
            {
                V1.Metrics v1 => v1.MemoryOomControl?.OomKill,
                V2.Metrics v2 => v2.MemoryEvents?.OomKill,
                _ => null,
            };
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _logger.LogDebug("session {KernelId}: reading its OOM kill count failed: {Message}", session.KernelId, e.Message);
            oomKills = null;
        }
        if (oomKills is not > 0 && !session.OutOfMemory)
            return null;
        if (EndOnOutOfMemory(session, DateTimeOffset.UtcNow) is { } ended)
            _registry.Publish(new SessionEvent(session.KernelId, "oom", session.State, session.ExitCode, ended.At, ended.Describe(), ended));
        return session.EndReason;
    }
}
