using KataAgent.Containerd;
using KataAgent.Containerd.Services;
using KataAgent.Oci;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Containers;

/// <summary>
/// Creates and starts a container as a list of named steps, each registering its undo:
/// snapshot → spec → container record → task → start. A failing step rolls back all earlier ones.
/// </summary>
public sealed class ContainerLauncher(ContainerdClient client, ILogger logger)
{
    /// <summary>Test hook: throws before the named step runs, to prove rollback.</summary>
    internal string? FailBeforeStep { get; set; }

    /// <summary>Test hook: observes the state after each step (spec-level checks of what was created).</summary>
    internal Func<string, CancellationToken, Task>? AfterStep { get; set; }

    public async Task<LaunchedContainer> LaunchAsync(ContainerLaunch launch, CancellationToken cancellationToken = default)
    {
        // Until the container record references the new snapshot, only a lease keeps GC off it.
        var lease = await client.Leases.CreateAsync(expiresAfter: TimeSpan.FromHours(1), cancellationToken: cancellationToken).ConfigureAwait(false);
        try
        {
            return await LaunchUnderLeaseAsync(launch, client.WithLease(lease.Id), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await client.Leases.DeleteAsync(lease.Id, cancellationToken: CancellationToken.None).ConfigureAwait(false);
        }
    }

    private async Task<LaunchedContainer> LaunchUnderLeaseAsync(ContainerLaunch launch, ContainerdClient leased, CancellationToken cancellationToken)
    {
        await using var undo = new UndoStack(logger);
        var state = new LaunchState(launch, leased);
        foreach (var (name, step) in Steps)
        {
            try
            {
                if (FailBeforeStep == name)
                    throw new InvalidOperationException($"injected failure before step '{name}'");
                await step(this, state, undo, cancellationToken).ConfigureAwait(false);
                if (AfterStep is not null)
                    await AfterStep(name, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                var failures = await undo.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
                var error = new ContainerLaunchException(launch.Id, name, e);
                if (failures.Count > 0)
                    throw new AggregateException(error.Message + $" (and {failures.Count} undo step(s) failed)", [error, .. failures]);
                throw error;
            }
        }
        undo.Commit();
        return new LaunchedContainer(launch.Id, state.Pid);
    }

    private delegate Task Step(ContainerLauncher self, LaunchState state, UndoStack undo, CancellationToken cancellationToken);

    private static readonly (string Name, Step Run)[] Steps =
    [
        ("snapshot", (s, st, u, ct) => s.PrepareSnapshotAsync(st, u, ct)),
        ("spec", (s, st, u, ct) => s.GenerateSpecAsync(st, ct)),
        ("container", (s, st, u, ct) => s.CreateContainerAsync(st, u, ct)),
        ("task", (s, st, u, ct) => s.CreateTaskAsync(st, u, ct)),
        ("start", (s, st, u, ct) => s.StartTaskAsync(st, ct)),
    ];

    private sealed class LaunchState(ContainerLaunch launch, ContainerdClient leased)
    {
        public ContainerLaunch Launch { get; } = launch;
        public ContainerdClient Leased { get; } = leased;
        public string SnapshotKey => Launch.Id;
        public IReadOnlyList<global::Containerd.Types.Mount> RootfsMounts { get; set; } = [];
        public byte[] SpecJson { get; set; } = [];
        public uint Pid { get; set; }
    }

    private async Task PrepareSnapshotAsync(LaunchState state, UndoStack undo, CancellationToken cancellationToken)
    {
        state.RootfsMounts = await state.Leased.Snapshots.PrepareAsync(state.SnapshotKey, state.Launch.Image.ChainId, cancellationToken: cancellationToken)
            .ConfigureAwait(false);
        undo.Push("snapshot", async ct =>
        {
            try
            {
                await client.Snapshots.RemoveAsync(state.SnapshotKey, cancellationToken: ct).ConfigureAwait(false);
            }
            catch (ContainerdNotFoundException)
            {
            }
        });
    }

    private Task GenerateSpecAsync(LaunchState state, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        SpecOpt[] opts = [ImageSpecOpts.WithImageConfig(state.Launch.Image.Config, state.Launch.Args), .. state.Launch.SpecOpts, SpecOpts.WithRlimitsCappedToCurrentProcess()];
        var spec = Specs.Generate(opts);
        state.SpecJson = Specs.ToUtf8Json(spec);
        return Task.CompletedTask;
    }

    private async Task CreateContainerAsync(LaunchState state, UndoStack undo, CancellationToken cancellationToken)
    {
        var launch = state.Launch;
        await client.Containers.CreateAsync(new NewContainer(launch.Id, launch.Runtime, state.SpecJson)
        {
            Image = launch.Image.Name,
            SnapshotKey = state.SnapshotKey,
            Labels = launch.Labels,
        }, cancellationToken).ConfigureAwait(false);
        undo.Push("container", async ct =>
        {
            try
            {
                await client.Containers.DeleteAsync(launch.Id, ct).ConfigureAwait(false);
            }
            catch (ContainerdNotFoundException)
            {
            }
        });
    }

    private async Task CreateTaskAsync(LaunchState state, UndoStack undo, CancellationToken cancellationToken)
    {
        var launch = state.Launch;
        try
        {
            state.Pid = await client.Tasks.CreateAsync(launch.Id, state.RootfsMounts, launch.Io, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            // A create that failed half-way can still leave a task (and its shim) behind.
            undo.Push("task", ct => TaskReaper.ReapTaskAsync(client, launch.Id, TaskReaper.SigKill, TimeSpan.Zero, logger, ct));
        }
    }

    private async Task StartTaskAsync(LaunchState state, CancellationToken cancellationToken)
    {
        await client.Tasks.StartAsync(state.Launch.Id, cancellationToken: cancellationToken).ConfigureAwait(false);
    }
}
