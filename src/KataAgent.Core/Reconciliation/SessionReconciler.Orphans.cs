using KataAgent.Core.Scratch;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Reconciliation;

internal sealed partial class SessionReconciler
{
    /// <summary>
    /// At start-up nothing is being created, so whatever an earlier, killed agent left half-made —
    /// leases, prepared snapshots, CNI attachments, scratch dirs, staged mounts, logs — belongs to no session and goes.
    /// </summary>
    public async Task CleanOrphansAsync(CancellationToken cancellationToken)
    {
        foreach (var lease in await Containerd.Leases.ListAsync(cancellationToken).ConfigureAwait(false))
        {
            _logger.LogInformation("removing lease {Lease} left by an earlier run", lease.Id);
            await Containerd.Leases.DeleteAsync(lease.Id, cancellationToken: cancellationToken).ConfigureAwait(false);
        }

        // A task whose containerd died while creating it can leave a shim that containerd never
        // learned of: it answers to nobody, so it and everything under it goes. Tasks.List is no
        // guide (containerd skips tasks whose shim is slow to answer), so each shim is asked about.
        foreach (var (shim, id) in Diagnostics.ProcessTree.ShimsOf(Containerd.Address, Containerd.Namespace))
        {
            if (await Containerd.Containers.FindAsync(id, cancellationToken).ConfigureAwait(false) is not null)
                continue;
            try
            {
                await Containerd.Tasks.GetAsync(id, cancellationToken: cancellationToken).ConfigureAwait(false);
                continue;
            }
            catch (KataAgent.Containerd.ContainerdNotFoundException)
            {
            }
            catch (KataAgent.Containerd.ContainerdException)
            {
                continue; // unsure: leave it
            }
            _logger.LogWarning("killing shim {Pid} of unknown task {Id}", shim.Pid, id);
            Diagnostics.ProcessTree.KillTree(shim.Pid);
        }

        var containers = await Containerd.Containers.ListAsync(cancellationToken).ConfigureAwait(false);
        var ownedSnapshots = containers.Select(c => c.SnapshotKey).ToHashSet(StringComparer.Ordinal);
        foreach (var snapshot in await Containerd.Snapshots.ListAsync(cancellationToken: cancellationToken).ConfigureAwait(false))
        {
            if (snapshot.Kind == global::Containerd.Services.Snapshots.V1.Kind.Committed || ownedSnapshots.Contains(snapshot.Name))
                continue;
            _logger.LogInformation("removing snapshot {Snapshot} left by an earlier run", snapshot.Name);
            try
            {
                await Containerd.Snapshots.RemoveAsync(snapshot.Name, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (KataAgent.Containerd.ContainerdException e)
            {
                _logger.LogWarning("cannot remove snapshot {Snapshot}: {Message}", snapshot.Name, e.Message);
            }
        }

        // Host parts are named by container id (a claimed pool member's differs from its kernel id).
        var known = _registry.Sessions.Select(s => s.Record.ContainerId).Concat(_registry.KernelIds).ToHashSet(StringComparer.Ordinal);
        foreach (var attachment in await _services.Network.ListAsync(cancellationToken).ConfigureAwait(false))
        {
            if (known.Contains(attachment.SessionId))
                continue;
            _logger.LogInformation("detaching network of vanished session {KernelId}", attachment.SessionId);
            await _services.Network.DetachAsync(attachment.SessionId, cancellationToken).ConfigureAwait(false);
        }
        // Rules no attachment accounts for (a plugin that finished after its agent died) would still map host ports.
        await _services.Network.RemoveStaleRulesAsync(known, cancellationToken).ConfigureAwait(false);

        // Disks first: the scratch dirs below hold their mount points.
        await ScratchQuota.ScratchDisks.For(_options, _logger).CleanOrphansAsync(known, cancellationToken).ConfigureAwait(false);
        if (Directory.Exists(_options.ScratchRoot))
        {
            foreach (var dir in Directory.GetDirectories(_options.ScratchRoot))
            {
                var id = Path.GetFileName(dir);
                if (known.Contains(id) || !ScratchDirectory.IsValidSessionId(id))
                    continue;
                _logger.LogInformation("removing scratch dir of vanished session {KernelId}", id);
                await ScratchDirectory.Open(_options.ScratchRoot, id).RemoveAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
            }
        }
        foreach (var id in _services.MountStaging.Sessions())
        {
            if (known.Contains(id) || !ScratchDirectory.IsValidSessionId(id))
                continue;
            _logger.LogInformation("releasing staged mounts of vanished session {KernelId}", id);
            _services.MountStaging.Release(id);
        }
        if (Directory.Exists(_options.LogDir))
        {
            foreach (var log in Directory.GetFiles(_options.LogDir, "*.log").Concat(Directory.GetFiles(_options.LogDir, "*" + Logs.LogRelays.FifoExtension)))
            {
                if (!known.Contains(Path.GetFileNameWithoutExtension(log)))
                    File.Delete(log);
            }
        }
    }
}
