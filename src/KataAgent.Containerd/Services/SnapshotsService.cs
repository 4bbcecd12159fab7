using Containerd.Services.Snapshots.V1;
using Containerd.Types;
using Grpc.Core;

namespace KataAgent.Containerd.Services;

public sealed class SnapshotsService(CallInvoker invoker)
{
    public const string DefaultSnapshotter = "overlayfs";

    private readonly Snapshots.SnapshotsClient _client = new(invoker);

    public Task<IReadOnlyList<Mount>> PrepareAsync(string key, string? parent, string snapshotter = DefaultSnapshotter,
        IReadOnlyDictionary<string, string>? labels = null, CancellationToken cancellationToken = default) =>
        Rpc.Call<IReadOnlyList<Mount>>($"snapshots.prepare {key}", async () =>
        {
            var request = new PrepareSnapshotRequest { Snapshotter = snapshotter, Key = key, Parent = parent ?? "" };
            if (labels is not null)
                request.Labels.Add(labels);
            return (await _client.PrepareAsync(request, cancellationToken: cancellationToken)).Mounts.ToList();
        });

    public Task<IReadOnlyList<Mount>> ViewAsync(string key, string parent, string snapshotter = DefaultSnapshotter,
        CancellationToken cancellationToken = default) =>
        Rpc.Call<IReadOnlyList<Mount>>($"snapshots.view {key}", async () =>
            (await _client.ViewAsync(new ViewSnapshotRequest { Snapshotter = snapshotter, Key = key, Parent = parent }, cancellationToken: cancellationToken))
                .Mounts.ToList());

    public Task<IReadOnlyList<Mount>> MountsAsync(string key, string snapshotter = DefaultSnapshotter, CancellationToken cancellationToken = default) =>
        Rpc.Call<IReadOnlyList<Mount>>($"snapshots.mounts {key}", async () =>
            (await _client.MountsAsync(new MountsRequest { Snapshotter = snapshotter, Key = key }, cancellationToken: cancellationToken)).Mounts.ToList());

    public Task CommitAsync(string name, string key, string snapshotter = DefaultSnapshotter,
        IReadOnlyDictionary<string, string>? labels = null, CancellationToken cancellationToken = default) =>
        Rpc.Call($"snapshots.commit {key} -> {name}", async () =>
        {
            var request = new CommitSnapshotRequest { Snapshotter = snapshotter, Name = name, Key = key };
            if (labels is not null)
                request.Labels.Add(labels);
            await _client.CommitAsync(request, cancellationToken: cancellationToken);
        });

    public Task RemoveAsync(string key, string snapshotter = DefaultSnapshotter, CancellationToken cancellationToken = default) =>
        Rpc.Call($"snapshots.remove {key}", async () =>
            await _client.RemoveAsync(new RemoveSnapshotRequest { Snapshotter = snapshotter, Key = key }, cancellationToken: cancellationToken));

    public Task<Info> StatAsync(string key, string snapshotter = DefaultSnapshotter, CancellationToken cancellationToken = default) =>
        Rpc.Call($"snapshots.stat {key}", async () =>
            (await _client.StatAsync(new StatSnapshotRequest { Snapshotter = snapshotter, Key = key }, cancellationToken: cancellationToken)).Info);

    public async Task<Info?> FindAsync(string key, string snapshotter = DefaultSnapshotter, CancellationToken cancellationToken = default)
    {
        try
        {
            return await StatAsync(key, snapshotter, cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException)
        {
            return null;
        }
    }

    public async Task<IReadOnlyList<Info>> ListAsync(string snapshotter = DefaultSnapshotter, CancellationToken cancellationToken = default, params string[] filters)
    {
        var request = new ListSnapshotsRequest { Snapshotter = snapshotter };
        request.Filters.Add(filters);
        var result = new List<Info>();
        await foreach (var page in Rpc.Stream("snapshots.list", _client.List(request, cancellationToken: cancellationToken), cancellationToken).ConfigureAwait(false))
            result.AddRange(page.Info);
        return result;
    }

    public Task<UsageResponse> UsageAsync(string key, string snapshotter = DefaultSnapshotter, CancellationToken cancellationToken = default) =>
        Rpc.Call($"snapshots.usage {key}", async () =>
            await _client.UsageAsync(new UsageRequest { Snapshotter = snapshotter, Key = key }, cancellationToken: cancellationToken));
}
