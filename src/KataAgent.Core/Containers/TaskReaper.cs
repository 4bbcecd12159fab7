using System.Runtime.InteropServices;
using KataAgent.Containerd;
using Microsoft.Extensions.Logging;
using TaskStatus = global::Containerd.V1.Types.Status;

namespace KataAgent.Core.Containers;

/// <summary>
/// Stops and removes a container's task, then the container and its snapshot. Idempotent:
/// whatever is already gone is skipped.
/// </summary>
public static partial class TaskReaper
{
    public const uint SigKill = 9;
    public const uint SigTerm = 15;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int KillProcess(int pid, int signal);

    /// <summary>Stop signal, grace period, SIGKILL, delete the task.</summary>
    public static async Task ReapTaskAsync(ContainerdClient client, string id, uint stopSignal, TimeSpan grace, ILogger logger,
        CancellationToken cancellationToken = default)
    {
        var task = await client.Tasks.FindAsync(id, cancellationToken).ConfigureAwait(false);
        if (task is null)
            return;

        if (task.Status is TaskStatus.Running or TaskStatus.Paused or TaskStatus.Pausing)
        {
            if (task.Status != TaskStatus.Running)
                await TryAsync(() => client.Tasks.ResumeAsync(id, cancellationToken), logger).ConfigureAwait(false);
            if (stopSignal != SigKill && grace > TimeSpan.Zero)
            {
                await TryAsync(() => client.Tasks.KillAsync(id, stopSignal, cancellationToken: cancellationToken), logger).ConfigureAwait(false);
                if (await WaitExitAsync(client, id, grace, cancellationToken).ConfigureAwait(false))
                    goto delete;
            }
            await TryAsync(() => client.Tasks.KillAsync(id, SigKill, all: true, cancellationToken: cancellationToken), logger).ConfigureAwait(false);
            if (!await WaitExitAsync(client, id, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false))
                logger.LogWarning("task {Id} did not exit after SIGKILL", id);
        }
        else if (task.Status == TaskStatus.Created && task.Pid > 0)
        {
            // A task whose start failed (gVisor, Kata) stays CREATED: kill refuses, delete refuses.
            // Stopping its sandbox process from the host is what releases it.
            if (KillProcess((int)task.Pid, (int)SigKill) == 0)
                await WaitExitAsync(client, id, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
        }

    delete:
        try
        {
            await client.Tasks.DeleteAsync(id, cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException)
        {
        }
    }

    /// <summary>Task, container record, snapshot — in that order.</summary>
    public static async Task ReapContainerAsync(ContainerdClient client, string id, uint stopSignal, TimeSpan grace, ILogger logger,
        CancellationToken cancellationToken = default)
    {
        await ReapTaskAsync(client, id, stopSignal, grace, logger, cancellationToken).ConfigureAwait(false);
        var container = await client.Containers.FindAsync(id, cancellationToken).ConfigureAwait(false);
        if (container is not null)
        {
            try
            {
                await client.Containers.DeleteAsync(id, cancellationToken).ConfigureAwait(false);
            }
            catch (ContainerdNotFoundException)
            {
            }
        }
        var snapshotKey = string.IsNullOrEmpty(container?.SnapshotKey) ? id : container.SnapshotKey;
        var snapshotter = string.IsNullOrEmpty(container?.Snapshotter) ? Containerd.Services.SnapshotsService.DefaultSnapshotter : container.Snapshotter;
        try
        {
            await client.Snapshots.RemoveAsync(snapshotKey, snapshotter, cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException)
        {
        }
    }

    private static async Task<bool> WaitExitAsync(ContainerdClient client, string id, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        try
        {
            await client.Tasks.WaitAsync(id, cancellationToken: limit.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
        catch (ContainerdNotFoundException)
        {
            return true;
        }
    }

    /// <summary>
    /// A signal or resume that fails does not stop the reap: the task may have died between the look-up and the call
    /// (runsc answers "sandbox is not running" with an unknown code). The wait and the delete that follow are what
    /// decide; a task that really cannot go makes the delete fail.
    /// </summary>
    private static async Task TryAsync(Func<Task> action, ILogger logger)
    {
        try
        {
            await action().ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException)
        {
        }
        catch (ContainerdFailedPreconditionException)
        {
        }
        catch (ContainerdException e)
        {
            logger.LogInformation("reap: {Message} (going on to the delete)", e.Message);
        }
    }
}
