using Containerd.Services.Images.V1;
using Containerd.Types;
using KataAgent.Containerd;

namespace KataAgent.Images;

/// <summary>
/// The steps an archive import and a registry pull share once the blobs are in the content store: unpack the layers
/// into a snapshot chain named by chain IDs (Prepare on the parent, Diff.Apply, Commit; existing snapshots are reused
/// and pinned to the lease), label layers and config for the garbage collector, and create or re-point the image record.
/// </summary>
/// <param name="leased">a client whose calls carry <paramref name="leaseId"/></param>
/// <param name="what">prefix for error messages, e.g. "importing NAME" or "pulling NAME"</param>
/// <param name="fail">makes the exception thrown for a failed step (message, containerd's error)</param>
internal sealed class ImageUnpacker(ContainerdClient leased, string leaseId, string snapshotter, string what, Func<string, Exception?, Exception> fail)
{
    /// <summary>Layers unpacked by this instance (0 when the chain existed).</summary>
    public int SnapshotsCommitted { get; private set; }

    /// <summary>Active snapshots prepared and not yet committed: a rollback removes them.</summary>
    public HashSet<string> PreparedSnapshots { get; } = [];

    /// <summary>Unpacks the layers (bottom first); <paramref name="onLayer"/> is told (index, done) around each layer that needs work.</summary>
    /// <returns>the chain ID of the top layer</returns>
    public async Task<string> UnpackAsync(IReadOnlyList<OciDescriptor> layers, IReadOnlyList<string> diffIds, OciDescriptor config,
        Action<int, bool>? onLayer, CancellationToken cancellationToken)
    {
        if (layers.Count != diffIds.Count || layers.Count == 0)
        {
            throw fail($"{what}: the manifest lists {layers.Count} layers but the config lists {diffIds.Count} diff_ids", null);
        }

        var snapshots = leased.Snapshots;
        var chain = ChainId.Compute(diffIds);
        string? parent = null;
        for (var i = 0; i < chain.Count; i++)
        {
            if (await snapshots.FindAsync(chain[i], snapshotter, cancellationToken).ConfigureAwait(false) is null)
            {
                onLayer?.Invoke(i, false);
                await ApplyLayerAsync(layers[i], diffIds[i], i, chain[i], parent, cancellationToken).ConfigureAwait(false);
                onLayer?.Invoke(i, true);
            }
            else
            {
                await leased.Leases.AddResourceAsync(leaseId, "snapshots/" + snapshotter, chain[i], cancellationToken).ConfigureAwait(false);
            }

            var layerInfo = await leased.Content.InfoAsync(layers[i].Digest, cancellationToken).ConfigureAwait(false);
            await EnsureLabelsAsync(leased, layerInfo, new Dictionary<string, string> { [GcLabels.Uncompressed] = diffIds[i] }, cancellationToken).ConfigureAwait(false);
            parent = chain[i];
        }

        var configInfo = await leased.Content.InfoAsync(config.Digest, cancellationToken).ConfigureAwait(false);
        await EnsureLabelsAsync(leased, configInfo, new Dictionary<string, string> { [GcLabels.SnapshotFor(snapshotter)] = chain[^1] }, cancellationToken).ConfigureAwait(false);
        return chain[^1];
    }

    private async Task ApplyLayerAsync(OciDescriptor layer, string diffId, int index, string chainId, string? parent, CancellationToken cancellationToken)
    {
        var snapshots = leased.Snapshots;
        var key = $"extract-{Guid.NewGuid():N} {chainId}";
        var step = $"{what}: unpacking layer {index} ({layer.Digest}, {layer.MediaType})";
        try
        {
            PreparedSnapshots.Add(key);
            var mounts = await snapshots.PrepareAsync(key, parent, snapshotter, cancellationToken: cancellationToken).ConfigureAwait(false);
            var applied = await leased.Diff.ApplyAsync(
                new ContentDescriptor { MediaType = layer.MediaType, Digest = layer.Digest, Size = layer.Size }, mounts, cancellationToken).ConfigureAwait(false);
            if (applied.Digest != diffId)
            {
                throw fail($"{step}: the layer unpacked to {applied.Digest}, but the image config says its diff_id is {diffId}", null);
            }

            try
            {
                await snapshots.CommitAsync(chainId, key, snapshotter, cancellationToken: cancellationToken).ConfigureAwait(false);
                PreparedSnapshots.Remove(key);
                SnapshotsCommitted++;
            }
            catch (ContainerdAlreadyExistsException)
            {
                // unpacked concurrently by someone else: theirs is as good as ours
                await leased.Leases.AddResourceAsync(leaseId, "snapshots/" + snapshotter, chainId, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (ContainerdException e)
        {
            throw fail($"{step} into snapshot {chainId} failed: {e.Message}", e);
        }
    }

    /// <summary>Removes the snapshots this instance prepared and did not commit (best effort, never with a cancelled token).</summary>
    public async Task RemovePreparedAsync(ContainerdClient client, Action<string, Exception> warn)
    {
        foreach (var key in PreparedSnapshots)
        {
            try
            {
                await client.Snapshots.RemoveAsync(key, snapshotter).ConfigureAwait(false);
            }
            catch (ContainerdNotFoundException)
            {
            }
            catch (ContainerdException e)
            {
                warn($"remove snapshot {key}", e);
            }
        }

        PreparedSnapshots.Clear();
    }

    /// <summary>Adds the labels a blob lacks (or has with another value); leaves it untouched when it has them all.</summary>
    public static async Task EnsureLabelsAsync(ContainerdClient client, Containerd.Services.ContentInfo info, IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken)
    {
        var missing = labels.Where(kv => !info.Labels.TryGetValue(kv.Key, out var value) || value != kv.Value).ToDictionary();
        if (missing.Count > 0)
        {
            await client.Content.SetLabelsAsync(info.Digest, missing, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>True when the record exists, points at <paramref name="target"/> and carries <paramref name="labels"/>.</summary>
    public static bool RecordMatches(Image? existing, OciDescriptor target, IReadOnlyDictionary<string, string>? labels)
        => existing is not null && existing.Target.Digest == target.Digest && existing.Target.MediaType == target.MediaType
            && existing.Target.Size == target.Size && (labels ?? new Dictionary<string, string>()).All(kv => existing.Labels.TryGetValue(kv.Key, out var v) && v == kv.Value);

    /// <summary>Creates the image record or points it at <paramref name="target"/> (keeping its other labels).</summary>
    /// <returns>whether the record was created or changed</returns>
    public static async Task<bool> SetImageRecordAsync(ContainerdClient client, string name, OciDescriptor target, IReadOnlyDictionary<string, string>? labels,
        string what, Func<string, Exception?, Exception> fail, CancellationToken cancellationToken)
    {
        var images = client.Images;
        var existing = await images.FindAsync(name, cancellationToken).ConfigureAwait(false);
        if (RecordMatches(existing, target, labels))
        {
            return false;
        }

        var record = new Image
        {
            Name = name,
            Target = new ContentDescriptor { MediaType = target.MediaType, Digest = target.Digest, Size = target.Size },
        };
        if (existing is not null)
        {
            record.Labels.Add(existing.Labels);
        }

        foreach (var (key, value) in labels ?? new Dictionary<string, string>())
        {
            record.Labels[key] = value;
        }

        try
        {
            await images.CreateOrUpdateAsync(record, cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdException e)
        {
            throw fail($"{what}: creating the image record failed: {e.Message}", e);
        }

        return true;
    }
}
