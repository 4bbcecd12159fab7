using KataAgent.Containerd;

namespace KataAgent.Testing;

/// <summary>Last-resort cleanup for tests: kills and deletes every task and container in a namespace.</summary>
public static class Reaper
{
    public static async Task ReapNamespaceAsync(ContainerdClient client, CancellationToken cancellationToken)
    {
        foreach (var task in await client.Tasks.ListAsync(cancellationToken: cancellationToken))
        {
            try
            {
                await client.Tasks.KillAsync(task.ContainerId, 9, all: true, cancellationToken: cancellationToken);
            }
            catch (ContainerdException)
            {
            }
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                timeout.CancelAfter(TimeSpan.FromSeconds(10));
                await client.Tasks.WaitAsync(task.ContainerId, cancellationToken: timeout.Token);
            }
            catch (Exception e) when (e is ContainerdException or OperationCanceledException)
            {
                // A task stuck in CREATED (e.g. gVisor after a failed start) ignores kill: stop its sandbox process.
                if (task.Pid > 0)
                    _ = ProcessTable.Kill((int)task.Pid, 9);
            }
            try
            {
                await client.Tasks.DeleteAsync(task.ContainerId, cancellationToken);
            }
            catch (ContainerdException)
            {
            }
        }
        foreach (var container in await client.Containers.ListAsync(cancellationToken))
        {
            try
            {
                await client.Containers.DeleteAsync(container.Id, cancellationToken);
            }
            catch (ContainerdException)
            {
            }
            if (!string.IsNullOrEmpty(container.SnapshotKey))
            {
                try
                {
                    await client.Snapshots.RemoveAsync(container.SnapshotKey, container.Snapshotter, cancellationToken);
                }
                catch (ContainerdException)
                {
                }
            }
        }
        foreach (var lease in await client.Leases.ListAsync(cancellationToken))
        {
            try
            {
                await client.Leases.DeleteAsync(lease.Id, cancellationToken: cancellationToken);
            }
            catch (ContainerdException)
            {
            }
        }
    }
}
