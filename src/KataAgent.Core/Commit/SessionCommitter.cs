using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Containerd.Services.Images.V1;
using Containerd.Types;
using KataAgent.Containerd;
using KataAgent.Core.Sessions;
using KataAgent.Images;
using Microsoft.Extensions.Logging;
using TaskStatus = Containerd.V1.Types.Status;

namespace KataAgent.Core.Commit;

/// <summary>
/// Turns a session's filesystem changes into a new image in containerd, the way containerd's own commit tooling
/// composes it from the snapshot, diff and content services:
/// <list type="number">
/// <item>the session's active snapshot (key = container id) and its parent — the top layer chain ID of the image the
///   session started from — are found, and that image's manifest and config read;</item>
/// <item>under a lease, the session's task is paused (when running) while the diff service writes the difference
///   between a view of the parent and the active snapshot as a gzip layer; the task is resumed afterwards, whatever
///   happened;</item>
/// <item>the layer is unpacked onto the parent as a committed snapshot named by the new chain ID, so sessions start
///   from the new image without a pull;</item>
/// <item>a config (the base config plus the layer's diff_id, a history entry and a commit label) and a manifest are
///   written with the garbage-collection labels containerd follows;</item>
/// <item>only then is the image record created (or, with replace, repointed) and the lease released.</item>
/// </list>
/// A commit that fails registers nothing: what it prepared is removed and its lease deleted with a synchronous GC.
/// </summary>
public sealed class SessionCommitter(ContainerdClient client, ImageInspector images, ILogger logger)
{
    public const string CommittedFromLabel = "io.kata-agent.committed-from";
    public const string CommittedFromImageLabel = "io.kata-agent.committed-from-image";
    public const string LeaseLabel = "kata-agent/commit";
    public const string Snapshotter = "overlayfs";

    /// <summary>Test hook: throws right before the named step: preparing, pausing, diffing, writing (unpacks the layer), config, register.</summary>
    internal string? FailBeforeStep { get; set; }

    /// <summary>Test hook: called after each phase change, while the commit waits for it.</summary>
    internal Func<CommitPhase, CancellationToken, Task>? OnPhase { get; set; }

    public async Task<CommittedImage> CommitAsync(SessionRecord record, string imageName, bool replace,
        Action<CommitPhase>? report = null, CancellationToken cancellationToken = default)
    {
        ValidateName(imageName);
        var stopwatch = Stopwatch.StartNew();
        var state = new CommitState(record, imageName, replace);
        await PhaseAsync(state, CommitPhase.Preparing, report, cancellationToken).ConfigureAwait(false);
        await PrepareAsync(state, cancellationToken).ConfigureAwait(false);

        var lease = await client.Leases.CreateAsync($"kata-agent-commit-{Guid.NewGuid():N}", TimeSpan.FromHours(1),
            new Dictionary<string, string> { [LeaseLabel] = imageName }, cancellationToken).ConfigureAwait(false);
        state.LeaseId = lease.Id;
        state.Leased = client.WithLease(lease.Id);
        try
        {
            await PinBaseAsync(state, cancellationToken).ConfigureAwait(false);
            await DiffWhilePausedAsync(state, report, cancellationToken).ConfigureAwait(false);
            await PhaseAsync(state, CommitPhase.Writing, report, cancellationToken).ConfigureAwait(false);
            await UnpackAsync(state, cancellationToken).ConfigureAwait(false);
            await WriteConfigAndManifestAsync(state, cancellationToken).ConfigureAwait(false);
            await RegisterAsync(state, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (!state.Registered)
        {
            logger.LogWarning("commit of session {KernelId} to {Image} failed, rolling back: {Error}", record.KernelId, imageName, e.Message);
            await RollBackAsync(state).ConfigureAwait(false);
            if (e is ImageCommitException or OperationCanceledException)
                throw;
            throw new ImageCommitException($"committing session {record.KernelId} to '{imageName}' failed: {e.Message}", e);
        }

        // The record references everything now; the lease also expires by itself should this fail.
        await TryAsync($"delete lease {state.LeaseId}", () => client.Leases.DeleteAsync(state.LeaseId, sync: false, CancellationToken.None)).ConfigureAwait(false);
        var result = new CommittedImage(imageName, state.ManifestDigest!, state.ConfigDigest!, state.Layer!.Digest, state.Layer.Size,
            state.DiffId!, state.ChainId!, state.Base!.Name, state.Replaced, state.PausedFor, stopwatch.Elapsed);
        logger.LogInformation("committed session {KernelId} to {Image} ({Manifest}; layer {Layer}, {Size} bytes; paused {Paused} ms)",
            record.KernelId, imageName, result.ManifestDigest, result.LayerDigest, result.LayerSize, (long)result.PausedFor.TotalMilliseconds);
        return result;
    }

    private sealed class CommitState(SessionRecord record, string name, bool replace)
    {
        public SessionRecord Record { get; } = record;
        public string Name { get; } = name;
        public bool Replace { get; } = replace;
        public string Id { get; } = Guid.NewGuid().ToString("N")[..12];
        public string LeaseId { get; set; } = "";
        public ContainerdClient Leased { get; set; } = null!;
        public string Parent { get; set; } = "";
        public ImageDetails? Base { get; set; }
        public ContentDescriptor? Layer { get; set; }
        public string? DiffId { get; set; }
        public string? ChainId { get; set; }
        public string? ConfigDigest { get; set; }
        public string? ManifestDigest { get; set; }
        public long ManifestSize { get; set; }
        public TimeSpan PausedFor { get; set; }
        public bool Replaced { get; set; }
        public bool Registered { get; set; }
        public HashSet<string> Snapshots { get; } = [];
        public HashSet<string> Ingests { get; } = [];
    }

    private async Task PhaseAsync(CommitState state, CommitPhase phase, Action<CommitPhase>? report, CancellationToken cancellationToken)
    {
        report?.Invoke(phase);
        if (OnPhase is not null)
            await OnPhase(phase, cancellationToken).ConfigureAwait(false);
        Step(phase.ToString().ToLowerInvariant(), state);
    }

    private void Step(string name, CommitState state)
    {
        if (FailBeforeStep == name)
            throw new ImageCommitException($"committing session {state.Record.KernelId} to '{state.Name}': injected failure before step '{name}'");
    }

    internal static void ValidateName(string name)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Length > 255 || name.Any(c => char.IsWhiteSpace(c) || char.IsControl(c)))
            throw new ArgumentException($"'{name}' is not a usable image name (1-255 characters, no spaces or control characters)", nameof(name));
    }

    // ---------------------------------------------------------------- preparing

    private async Task PrepareAsync(CommitState state, CancellationToken cancellationToken)
    {
        var record = state.Record;
        if (!state.Replace && await client.Images.FindAsync(state.Name, cancellationToken).ConfigureAwait(false) is not null)
            throw new ImageExistsException(state.Name);
        var snapshot = await client.Snapshots.FindAsync(record.ContainerId, Snapshotter, cancellationToken).ConfigureAwait(false)
            ?? throw new ImageCommitException($"session {record.KernelId} has no snapshot '{record.ContainerId}' on {Snapshotter}: nothing to commit");
        if (string.IsNullOrEmpty(snapshot.Parent))
            throw new ImageCommitException($"session {record.KernelId}: snapshot '{record.ContainerId}' has no parent, so there is no image layer to diff against");
        state.Parent = snapshot.Parent;
        state.Base = await FindBaseImageAsync(record, snapshot.Parent, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The session's image, or (when that name was repointed since) any image whose top layer is the snapshot's parent.</summary>
    private async Task<ImageDetails> FindBaseImageAsync(SessionRecord record, string parent, CancellationToken cancellationToken)
    {
        var named = await images.FindAsync(record.Image, Snapshotter, cancellationToken: cancellationToken).ConfigureAwait(false);
        if (named?.ChainId == parent)
            return named;
        foreach (var candidate in await client.Images.ListAsync(cancellationToken).ConfigureAwait(false))
        {
            try
            {
                var details = await images.InspectAsync(candidate.Name, Snapshotter, cancellationToken: cancellationToken).ConfigureAwait(false);
                if (details.ChainId == parent)
                    return details;
            }
            catch (Exception e) when (e is ContainerdException or ImageImportException)
            {
                // an image this agent cannot read is not the base
            }
        }
        throw new ImageCommitException($"session {record.KernelId}: no image on this agent has the session's base layers (chain {parent}); " +
            $"'{record.Image}' was replaced or deleted after the session started");
    }

    /// <summary>The base image's blobs are pinned to the lease too: deleting that image meanwhile must not take them away.</summary>
    private static async Task PinBaseAsync(CommitState state, CancellationToken cancellationToken)
    {
        var b = state.Base!;
        foreach (var digest in b.Layers.Select(l => l.Digest).Append(b.ConfigDescriptor.Digest).Distinct(StringComparer.Ordinal))
            await state.Leased.Leases.AddResourceAsync(state.LeaseId, "content", digest, cancellationToken).ConfigureAwait(false);
        await state.Leased.Leases.AddResourceAsync(state.LeaseId, "snapshots/" + Snapshotter, state.Parent, cancellationToken).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- pausing, diffing

    private async Task DiffWhilePausedAsync(CommitState state, Action<CommitPhase>? report, CancellationToken cancellationToken)
    {
        var id = state.Record.ContainerId;
        var task = await client.Tasks.FindAsync(id, cancellationToken).ConfigureAwait(false);
        var paused = false;
        var pausedAt = Stopwatch.StartNew();
        Exception? failure = null;
        try
        {
            if (task?.Status == TaskStatus.Running)
            {
                await PhaseAsync(state, CommitPhase.Pausing, report, cancellationToken).ConfigureAwait(false);
                try
                {
                    await client.Tasks.PauseAsync(id, cancellationToken).ConfigureAwait(false);
                }
                finally
                {
                    // A pause that failed half-way may have frozen the task all the same.
                    paused = (await client.Tasks.FindAsync(id, CancellationToken.None).ConfigureAwait(false))?.Status is TaskStatus.Paused or TaskStatus.Pausing;
                }
                pausedAt.Restart();
            }
            await PhaseAsync(state, CommitPhase.Diffing, report, cancellationToken).ConfigureAwait(false);
            await DiffAsync(state, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            failure = e;
            throw;
        }
        finally
        {
            if (paused)
            {
                state.PausedFor = pausedAt.Elapsed;
                await ResumeAsync(state, failure).ConfigureAwait(false);
            }
        }
    }

    private async Task ResumeAsync(CommitState state, Exception? failure)
    {
        var id = state.Record.ContainerId;
        try
        {
            await client.Tasks.ResumeAsync(id, CancellationToken.None).ConfigureAwait(false);
        }
        catch (ContainerdException e)
        {
            logger.LogError("session {KernelId} could not be resumed after the commit paused it: {Error}", state.Record.KernelId, e.Message);
            // Reported over a diff failure too: a frozen session is the worse news.
            throw new ImageCommitException($"session {state.Record.KernelId} was paused for the commit and could not be resumed: {e.Message}" +
                (failure is null ? "" : $" (the commit had failed: {failure.Message})"), e);
        }
    }

    private async Task DiffAsync(CommitState state, CancellationToken cancellationToken)
    {
        var leased = state.Leased;
        var viewKey = $"kata-agent-commit-view-{state.Id}";
        state.Snapshots.Add(viewKey);
        var lower = await leased.Snapshots.ViewAsync(viewKey, state.Parent, Snapshotter, cancellationToken).ConfigureAwait(false);
        var upper = await client.Snapshots.MountsAsync(state.Record.ContainerId, Snapshotter, cancellationToken).ConfigureAwait(false);
        var reference = $"kata-agent-commit-diff-{state.Id}";
        state.Ingests.Add(reference);
        var layer = await leased.Diff.DiffAsync(lower, upper, MediaTypes.OciLayerGzip, reference, cancellationToken: cancellationToken).ConfigureAwait(false);
        state.Ingests.Remove(reference);
        state.Layer = layer;

        var info = await leased.Content.InfoAsync(layer.Digest, cancellationToken).ConfigureAwait(false);
        state.DiffId = info.Labels.GetValueOrDefault(GcLabels.Uncompressed)
            ?? throw new ImageCommitException($"the diff service wrote layer {layer.Digest} without its {GcLabels.Uncompressed} label");
        await TryAsync($"remove snapshot {viewKey}", () => client.Snapshots.RemoveAsync(viewKey, Snapshotter, CancellationToken.None)).ConfigureAwait(false);
        state.Snapshots.Remove(viewKey);
    }

    // ---------------------------------------------------------------- writing

    /// <summary>The layer applied onto the parent, committed under the new chain ID (reused when it exists).</summary>
    private async Task UnpackAsync(CommitState state, CancellationToken cancellationToken)
    {
        var leased = state.Leased;
        var layer = state.Layer!;
        state.ChainId = Images.ChainId.Compute([.. state.Base!.DiffIds, state.DiffId!])[^1];
        if (await leased.Snapshots.FindAsync(state.ChainId, Snapshotter, cancellationToken).ConfigureAwait(false) is not null)
        {
            await leased.Leases.AddResourceAsync(state.LeaseId, "snapshots/" + Snapshotter, state.ChainId, cancellationToken).ConfigureAwait(false);
            return;
        }

        var key = $"kata-agent-commit-extract-{state.Id} {state.ChainId}";
        state.Snapshots.Add(key);
        var mounts = await leased.Snapshots.PrepareAsync(key, state.Parent, Snapshotter, cancellationToken: cancellationToken).ConfigureAwait(false);
        var applied = await leased.Diff.ApplyAsync(new ContentDescriptor { MediaType = layer.MediaType, Digest = layer.Digest, Size = layer.Size },
            mounts, cancellationToken).ConfigureAwait(false);
        if (applied.Digest != state.DiffId)
            throw new ImageCommitException($"layer {layer.Digest} unpacked to {applied.Digest}, but the diff service labelled it {state.DiffId}");
        try
        {
            await leased.Snapshots.CommitAsync(state.ChainId, key, Snapshotter, cancellationToken: cancellationToken).ConfigureAwait(false);
            state.Snapshots.Remove(key);
        }
        catch (ContainerdAlreadyExistsException)
        {
            // committed concurrently by someone else: theirs is as good
            await leased.Leases.AddResourceAsync(state.LeaseId, "snapshots/" + Snapshotter, state.ChainId, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task WriteConfigAndManifestAsync(CommitState state, CancellationToken cancellationToken)
    {
        Step("config", state);
        var b = state.Base!;
        var baseConfig = await state.Leased.Content.ReadAllAsync(b.ConfigDescriptor.Digest, cancellationToken).ConfigureAwait(false);
        var config = BuildConfig(baseConfig, state.DiffId!, state.Record.KernelId, b.Name, DateTimeOffset.UtcNow);
        state.ConfigDigest = OciDigest.Compute(config);
        await WriteBlobAsync(state, config, state.ConfigDigest, new Dictionary<string, string> { [GcLabels.SnapshotFor(Snapshotter)] = state.ChainId! },
            cancellationToken).ConfigureAwait(false);

        var layer = state.Layer!;
        var manifest = new OciManifest
        {
            MediaType = MediaTypes.OciManifest,
            Config = new OciDescriptor { MediaType = MediaTypes.OciConfig, Digest = state.ConfigDigest, Size = config.Length },
            Layers = [.. b.Layers.Select(l => l with { Platform = null }), new OciDescriptor { MediaType = layer.MediaType, Digest = layer.Digest, Size = layer.Size }],
        };
        var manifestBytes = ImageJson.Serialize(manifest);
        state.ManifestDigest = OciDigest.Compute(manifestBytes);
        state.ManifestSize = manifestBytes.Length;
        await WriteBlobAsync(state, manifestBytes, state.ManifestDigest, GcLabels.ForManifest(manifest), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The base config with the new layer: edited as JSON, so fields this code has no model for survive. Adds the
    /// diff_id, a history entry and the commit labels, and sets the creation time; entrypoint, env and the rest stay.
    /// </summary>
    public static byte[] BuildConfig(ReadOnlySpan<byte> baseConfig, string diffId, string kernelId, string baseImage, DateTimeOffset now)
    {
        var root = JsonNode.Parse(baseConfig) as JsonObject ?? throw new ImageCommitException("the base image config is not a JSON object");
        var created = now.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture);
        root["created"] = created;

        if (root["rootfs"] is not JsonObject rootfs)
            root["rootfs"] = rootfs = new JsonObject { ["type"] = "layers" };
        if (rootfs["diff_ids"] is not JsonArray diffIds)
            rootfs["diff_ids"] = diffIds = [];
        diffIds.Add(diffId);

        if (root["history"] is not JsonArray history)
            root["history"] = history = [];
        history.Add(new JsonObject
        {
            ["created"] = created,
            ["created_by"] = $"kata-agent commit of session {kernelId}",
            ["comment"] = $"changes made in a session of {baseImage}",
        });

        if (root["config"] is not JsonObject runtime)
            root["config"] = runtime = [];
        if (runtime["Labels"] is not JsonObject labels)
            runtime["Labels"] = labels = [];
        labels[CommittedFromLabel] = kernelId;
        labels[CommittedFromImageLabel] = baseImage;

        var bytes = JsonSerializer.SerializeToUtf8Bytes(root);
        _ = ImageJson.DeserializeConfig(bytes); // still a config the rest of the agent can read
        return bytes;
    }

    private static async Task WriteBlobAsync(CommitState state, byte[] data, string digest, IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken)
    {
        var content = state.Leased.Content;
        var existing = await content.FindAsync(digest, cancellationToken).ConfigureAwait(false);
        if (existing is not null)
        {
            await state.Leased.Leases.AddResourceAsync(state.LeaseId, "content", digest, cancellationToken).ConfigureAwait(false);
            var missing = labels.Where(kv => existing.Labels.GetValueOrDefault(kv.Key) != kv.Value).ToDictionary();
            if (missing.Count > 0)
                await content.SetLabelsAsync(digest, missing, cancellationToken).ConfigureAwait(false);
            return;
        }
        var reference = $"kata-agent-commit-{state.Id}-{OciDigest.Hex(digest)[..12]}";
        state.Ingests.Add(reference);
        using var stream = new MemoryStream(data, writable: false);
        await content.WriteAsync(reference, stream, data.Length, digest, labels, cancellationToken).ConfigureAwait(false);
        state.Ingests.Remove(reference);
    }

    private async Task RegisterAsync(CommitState state, CancellationToken cancellationToken)
    {
        Step("register", state);
        var record = new Image
        {
            Name = state.Name,
            Target = new ContentDescriptor { MediaType = MediaTypes.OciManifest, Digest = state.ManifestDigest, Size = state.ManifestSize },
        };
        record.Labels[CommittedFromLabel] = state.Record.KernelId;
        if (state.Replace)
        {
            state.Replaced = await client.Images.FindAsync(state.Name, cancellationToken).ConfigureAwait(false) is not null;
            await state.Leased.Images.CreateOrUpdateAsync(record, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            try
            {
                await state.Leased.Images.CreateAsync(record, cancellationToken).ConfigureAwait(false);
            }
            catch (ContainerdAlreadyExistsException)
            {
                throw new ImageExistsException(state.Name); // created meanwhile by someone else
            }
        }
        state.Registered = true;
    }

    // ---------------------------------------------------------------- rollback

    private async Task RollBackAsync(CommitState state)
    {
        // best effort, and never with the caller's (possibly cancelled) token
        foreach (var key in state.Snapshots)
            await TryAsync($"remove snapshot {key}", () => client.Snapshots.RemoveAsync(key, Snapshotter, CancellationToken.None)).ConfigureAwait(false);
        foreach (var reference in state.Ingests)
        {
            await TryAsync($"abort ingest {reference}", async () =>
            {
                if (await client.Content.StatusAsync(reference, CancellationToken.None).ConfigureAwait(false) is not null)
                    await client.Content.AbortAsync(reference, CancellationToken.None).ConfigureAwait(false);
            }).ConfigureAwait(false);
        }
        // a synchronous GC: what only this commit referenced is gone when we return
        if (state.LeaseId.Length > 0)
            await TryAsync($"delete lease {state.LeaseId}", () => client.Leases.DeleteAsync(state.LeaseId, sync: true, CancellationToken.None)).ConfigureAwait(false);
    }

    private async Task TryAsync(string what, Func<Task> action)
    {
        try
        {
            await action().ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException)
        {
        }
        catch (ContainerdException e)
        {
            logger.LogWarning("commit cleanup: cannot {What}: {Error}", what, e.Message);
        }
    }
}
