using System.Runtime.CompilerServices;
using KataAgent.Core.Containers;
using KataAgent.Core.Sessions;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core;

/// <summary>What reconciliation did in one round.</summary>
public sealed record ReconcileReport(IReadOnlyList<string> ReapedStrays, IReadOnlyList<string> CleanedVanished);

public sealed partial class Agent
{
    /// <summary>New container from the same image; same scratch dir, network and ports.</summary>
    public async Task<Session> RestartSessionAsync(string kernelId, CancellationToken cancellationToken = default)
    {
        var old = GetSession(kernelId);
        if (!_creating.TryAdd(kernelId, 0))
            throw new SessionRequestException($"session {kernelId} is already being created or restarted");
        try
        {
            await old.DisposeAsync().ConfigureAwait(false);
            var restarted = await Creator.RestartAsync(old.Record, cancellationToken).ConfigureAwait(false);
            Register(restarted);
            Publish(new SessionEvent(kernelId, "restarted", restarted.State, null, DateTimeOffset.UtcNow));
            return restarted;
        }
        finally
        {
            _creating.TryRemove(kernelId, out _);
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
    public async Task<ReconcileReport> ReconcileAsync(CancellationToken cancellationToken = default)
    {
        var reaped = new List<string>();
        var cleaned = new List<string>();
        var containers = await Containerd.Containers.ListAsync(cancellationToken).ConfigureAwait(false);
        var containerIds = containers.Select(c => c.Id).ToHashSet(StringComparer.Ordinal);
        foreach (var container in containers)
        {
            if (_sessions.ContainsKey(container.Id) || _creating.ContainsKey(container.Id))
                continue;
            _logger.LogWarning("reaping stray container {Id}", container.Id);
            if (SessionLabels.TryReadRecord(container.Labels, out var json))
                await Destroyer.DestroyAsync(SessionRecord.FromJson(json), keepScratch: false, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
            else
                await TaskReaper.ReapContainerAsync(Containerd, container.Id, TaskReaper.SigKill, TimeSpan.Zero, _logger, cancellationToken).ConfigureAwait(false);
            reaped.Add(container.Id);
        }
        foreach (var session in _sessions.Values)
        {
            if (containerIds.Contains(session.Record.ContainerId) || _creating.ContainsKey(session.KernelId) || session.State >= SessionState.Destroying)
                continue;
            _logger.LogWarning("session {KernelId} lost its container; cleaning up", session.KernelId);
            await DestroySessionAsync(session.KernelId, cancellationToken: cancellationToken).ConfigureAwait(false);
            cleaned.Add(session.KernelId);
        }
        foreach (var session in _sessions.Values)
            await SessionLog.EnforceCapAsync(session.Record.LogPath, Options.SessionLogMaxBytes, cancellationToken).ConfigureAwait(false);
        return new ReconcileReport(reaped, cleaned);
    }

    private async Task ReconcileLoopAsync(TimeSpan interval, CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(interval);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    await ReconcileAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    _logger.LogWarning(e, "reconciliation failed");
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>After the event stream broke, exits may have been missed: ask containerd directly.</summary>
    private async Task ReconcileAfterGapAsync(CancellationToken cancellationToken)
    {
        foreach (var session in _sessions.Values.Where(s => s.State == SessionState.Running))
        {
            if (await Containerd.Tasks.FindEndedAsync(session.Record.ContainerId, cancellationToken).ConfigureAwait(false) is { } ended)
            {
                var code = ended.Code;
                if (session.TryTransition(SessionState.Exited, code))
                    Publish(new SessionEvent(session.KernelId, "exited", SessionState.Exited, code, DateTimeOffset.UtcNow, "seen after the event stream resumed"));
            }
        }
    }
}
