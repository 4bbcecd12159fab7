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

    private Task<LaunchedContainer> LaunchUnderLeaseAsync(ContainerLaunch launch, ContainerdClient leased, CancellationToken cancellationToken) =>
        Steps.RunAsync(this, new Leased(launch, leased), new StepRunOptions
        {
            Wrap = (step, e) => new ContainerLaunchException(launch.Id, step, e),
            FailBeforeStep = FailBeforeStep,
            AfterStep = AfterStep,
        }, logger, cancellationToken);

    private static readonly StepPipeline<ContainerLauncher, Leased, LaunchedContainer> Steps = StepPipeline.Start<ContainerLauncher, Leased>()
        .Then("snapshot", static (s, leased, undo, ct) => s.PrepareSnapshotAsync(leased, undo, ct))
        .Then("spec", static (_, prepared, _, ct) => GenerateSpecAsync(prepared, ct))
        .Then("container", static (s, specified, undo, ct) => s.CreateContainerAsync(specified, undo, ct))
        .Then("task", static (s, prepared, undo, ct) => s.CreateTaskAsync(prepared, undo, ct))
        .Then("start", static (s, launched, _, ct) => s.StartTaskAsync(launched, ct));

    /// <summary>The launch, and a client whose calls hold the lease.</summary>
    private sealed record Leased(ContainerLaunch Launch, ContainerdClient Client);

    /// <summary>snapshot: the rootfs is prepared under the key <c>Launch.Id</c>.</summary>
    private sealed record Prepared(ContainerLaunch Launch, IReadOnlyList<global::Containerd.Types.Mount> RootfsMounts)
    {
        public string SnapshotKey => Launch.Id;
    }

    /// <summary>spec: the OCI runtime spec, as JSON.</summary>
    private sealed record Specified(Prepared Prepared, byte[] SpecJson);

    private async Task<Prepared> PrepareSnapshotAsync(Leased leased, UndoStack undo, CancellationToken cancellationToken)
    {
        var snapshotKey = leased.Launch.Id;
        var rootfs = await leased.Client.Snapshots.PrepareAsync(snapshotKey, leased.Launch.Image.ChainId, cancellationToken: cancellationToken)
            .ConfigureAwait(false);
        undo.Push("snapshot", async ct =>
        {
            try
            {
                await client.Snapshots.RemoveAsync(snapshotKey, cancellationToken: ct).ConfigureAwait(false);
            }
            catch (ContainerdNotFoundException)
            {
            }
        });
        return new Prepared(leased.Launch, rootfs);
    }

    private static Task<Specified> GenerateSpecAsync(Prepared prepared, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        SpecOpt[] opts = [ImageSpecOpts.WithImageConfig(prepared.Launch.Image.Config, prepared.Launch.Args), .. prepared.Launch.SpecOpts, SpecOpts.WithRlimitsCappedToCurrentProcess()];
        var spec = Specs.Generate(opts);
        return Task.FromResult(new Specified(prepared, Specs.ToUtf8Json(spec)));
    }

    /// <summary>
    /// How long a create call may take once sent. A caller's cancellation does not abandon it: containerd finishes a
    /// create the client gave up on, and an undo run before it does would find nothing and leave the container or the
    /// task (with its shim) behind.
    /// </summary>
    internal static readonly TimeSpan CreateCallLimit = TimeSpan.FromSeconds(60);

    private async Task<Prepared> CreateContainerAsync(Specified specified, UndoStack undo, CancellationToken cancellationToken)
    {
        var launch = specified.Prepared.Launch;
        cancellationToken.ThrowIfCancellationRequested();
        using (var bounded = new CancellationTokenSource(CreateCallLimit))
        {
            await client.Containers.CreateAsync(new NewContainer(launch.Id, launch.Runtime, specified.SpecJson)
            {
                Image = launch.Image.Name,
                SnapshotKey = specified.Prepared.SnapshotKey,
                Labels = launch.Labels,
            }, bounded.Token).ConfigureAwait(false);
        }
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
        cancellationToken.ThrowIfCancellationRequested();
        return specified.Prepared;
    }

    private async Task<LaunchedContainer> CreateTaskAsync(Prepared prepared, UndoStack undo, CancellationToken cancellationToken)
    {
        var launch = prepared.Launch;
        cancellationToken.ThrowIfCancellationRequested();
        try
        {
            using var bounded = new CancellationTokenSource(CreateCallLimit);
            var pid = await client.Tasks.CreateAsync(launch.Id, prepared.RootfsMounts, launch.Io, cancellationToken: bounded.Token).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
            return new LaunchedContainer(launch.Id, pid);
        }
        finally
        {
            // A create that failed half-way can still leave a task (and its shim) behind.
            undo.Push("task", ct => TaskReaper.ReapTaskAsync(client, launch.Id, TaskReaper.SigKill, TimeSpan.Zero, logger, ct));
        }
    }

    private async Task<LaunchedContainer> StartTaskAsync(LaunchedContainer launched, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using (var bounded = new CancellationTokenSource(CreateCallLimit))
        {
            await client.Tasks.StartAsync(launched.Id, cancellationToken: bounded.Token).ConfigureAwait(false);
        }
        cancellationToken.ThrowIfCancellationRequested();
        return launched;
    }
}
