using KataAgent.Core.Reconciliation;
using KataAgent.Core.Sessions;

namespace KataAgent.Core;

public sealed partial class Agent
{
    /// <summary>New container from the same image; same scratch dir, network and ports.</summary>
    public async Task<Session> RestartSessionAsync(string kernelId, CancellationToken cancellationToken = default)
    {
        var old = GetSession(kernelId);
        if (old.Record.ContainerId != old.KernelId)
            throw new SessionRequestException($"session {kernelId} was served from the warm pool (container {old.Record.ContainerId}); restarting such a session is not supported yet: destroy it and create another");
        if (!_registry.TryBeginCreating(kernelId))
            throw new SessionRequestException($"session {kernelId} is already being created or restarted");
        try
        {
            await old.DisposeAsync().ConfigureAwait(false);
            var restarted = await Creator.RestartAsync(old.Record, cancellationToken).ConfigureAwait(false);
            restarted.Timeouts = SessionTimeouts.For(restarted.Record.Request, Options);
            FindSandboxProcesses(restarted);
            _registry.Register(restarted);
            _registry.Publish(new SessionEvent(kernelId, "restarted", restarted.State, null, DateTimeOffset.UtcNow));
            return restarted;
        }
        finally
        {
            _registry.EndCreating(kernelId);
        }
    }

    /// <summary>The session's container log (the runner's own stdout/stderr), at most the configured cap.</summary>
    public async Task<string> ReadLogAsync(string kernelId, CancellationToken cancellationToken = default)
    {
        var path = GetSession(kernelId).Record.LogPath;
        await SessionLog.EnforceCapAsync(path, Options.SessionLogMaxBytes, cancellationToken).ConfigureAwait(false);
        return await SessionLog.ReadAsync(path, Options.SessionLogMaxBytes, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The log from its start, then whatever is appended, until cancelled or the session is destroyed.</summary>
    public IAsyncEnumerable<string> FollowLogAsync(string kernelId, CancellationToken cancellationToken = default)
    {
        var session = GetSession(kernelId);
        return SessionLog.FollowAsync(session.Record.LogPath, Options.SessionLogMaxBytes,
            () => session.State >= SessionState.Destroying, cancellationToken);
    }

    /// <summary>
    /// One round: containers in our namespace that no session owns are reaped; sessions whose
    /// container vanished are cleaned up. Live sessions are never touched.
    /// </summary>
    public Task<ReconcileReport> ReconcileAsync(CancellationToken cancellationToken = default) =>
        _reconciler.ReconcileAsync(cancellationToken);
}
