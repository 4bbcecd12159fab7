using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using KataAgent.Containerd;
using KataAgent.Oci;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Images.Registry;

/// <summary>Options for <see cref="ImagePuller"/>.</summary>
public sealed record PullOptions
{
    /// <summary>Name of the image record; default: the reference in full (<c>docker.io/library/python:3.12</c>).</summary>
    public string? Name { get; init; }

    /// <summary>Labels on the image record.</summary>
    public IReadOnlyDictionary<string, string>? Labels { get; init; }

    /// <summary>Let the pull point an existing name at other content (a moved tag); otherwise that fails naming the image.</summary>
    public bool Replace { get; init; }

    /// <summary>Unpack the layers into a snapshot chain (needed before a container can use the image).</summary>
    public bool Unpack { get; init; } = true;

    public string Snapshotter { get; init; } = "overlayfs";

    /// <summary>The platform picked from an index or manifest list.</summary>
    public OciPlatform Platform { get; init; } = OciPlatform.LinuxAmd64;

    /// <summary>
    /// How long the pull's lease lives. A pull that is cancelled or loses its connection leaves what it fetched (whole
    /// blobs and partial ingests) under that lease, so the next pull of the same image resumes; if none comes, the lease
    /// expires and garbage collection frees it all.
    /// </summary>
    public TimeSpan LeaseExpiry { get; init; } = TimeSpan.FromHours(1);

    /// <summary>False: a failed pull of any kind removes everything it fetched (no resume).</summary>
    public bool KeepPartialForResume { get; init; } = true;

    /// <summary>How far the layers may expand when unpacked; null: no cap. See <see cref="ExpansionLimit"/>.</summary>
    public long? MaxExpandedBytes { get; init; }
}

/// <summary>What a pull did.</summary>
/// <param name="Name">the image record's name</param>
/// <param name="Source">host of the registry or mirror the image came from (empty when nothing was asked of a registry)</param>
/// <param name="Target">what the record points at: the manifest, or the index it was picked from</param>
/// <param name="Manifest">the platform manifest</param>
/// <param name="ChainId">chain ID of the top layer: the image's committed snapshot</param>
/// <param name="AlreadyPresent">the image was complete locally: nothing was fetched or changed</param>
/// <param name="BlobsFetched">blobs downloaded (fully or the rest of a partial one)</param>
/// <param name="BlobsResumed">of those, blobs continued from a partial ingest</param>
/// <param name="BytesDownloaded">bytes that came over the network for blobs</param>
public sealed record PulledImage(
    string Name,
    ImageReference Reference,
    string Source,
    OciDescriptor Target,
    OciDescriptor Manifest,
    ImageConfig Config,
    string ChainId,
    bool AlreadyPresent,
    int BlobsFetched,
    int BlobsResumed,
    long BytesDownloaded,
    int SnapshotsCommitted,
    bool RecordChanged,
    TimeSpan Elapsed);

/// <summary>
/// Pulls images from registries into containerd, as containerd's own pull does:
/// <list type="number">
/// <item>the reference is resolved on the registry (its mirrors first) to a manifest, through an index or manifest list
///   for the wanted platform;</item>
/// <item>under a fresh lease labelled with the manifest digest, the config and then the layers are downloaded (a bounded number at
///   once), each streamed into the content store under a stable ingest ref and checked against its digest: a blob
///   already in the store is not fetched, and a partial ingest left by an interrupted pull is continued with a Range
///   request from its offset;</item>
/// <item>manifest (and index) go in with the GC labels naming their children; the layers are unpacked into a snapshot
///   chain and the image record is created or re-pointed; the lease is released.</item>
/// </list>
/// A digest mismatch, an auth error or any failure other than cancellation or a broken connection removes what the pull
/// fetched (lease deleted with a synchronous GC) and registers nothing. Pulling an image that is complete locally asks
/// the registry for the manifest only (nothing when the reference pins a digest) and changes nothing.
/// </summary>
public sealed class ImagePuller(ContainerdClient client, RegistryClient registry, ILogger? logger = null)
{
    private const string LeaseLabel = "kata-agent/pull";
    private const int MaxJsonBlob = 16 * 1024 * 1024;
    private static readonly ConcurrentDictionary<string, SemaphoreSlim> LeaseGates = new();
    private readonly ILogger _logger = logger ?? NullLogger.Instance;

    /// <summary>The ingest ref a blob is written under: the same for every pull, so an interrupted write is resumed.</summary>
    internal static string IngestRef(string digest) => "kata-agent-pull-" + OciDigest.Hex(digest);

    /// <summary>Label on a pull's lease naming the manifest pulled: a later pull of it takes over what an interrupted one kept.</summary>
    internal const string ManifestLabel = "kata-agent/pull-manifest";

    public Task<PulledImage> PullAsync(string reference, PullOptions? options = null, IProgress<PullProgress>? progress = null, CancellationToken cancellationToken = default)
        => PullAsync(ImageReference.Parse(reference), options, progress, cancellationToken);

    public async Task<PulledImage> PullAsync(ImageReference reference, PullOptions? options = null, IProgress<PullProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new PullOptions();
        var stopwatch = Stopwatch.StartNew();
        var name = options.Name ?? reference.ToString();
        progress?.Report(new PullProgress(name, PullPhase.Resolving, null, 0, 0));

        // a pinned digest that is complete locally needs no registry at all
        if (reference.Digest is { } pinned && await client.Images.FindAsync(name, cancellationToken).ConfigureAwait(false) is { } record
            && record.Target.Digest == pinned
            && await CompleteLocallyAsync(name, new OciDescriptor { MediaType = record.Target.MediaType, Digest = record.Target.Digest, Size = record.Target.Size },
                options, cancellationToken).ConfigureAwait(false) is { } local
            && ImageUnpacker.RecordMatches(record, local.Target, options.Labels))
        {
            progress?.Report(new PullProgress(name, PullPhase.Done, null, local.Size, local.Size));
            return new PulledImage(name, reference, "", local.Target, local.Manifest, local.Config, local.ChainId, true, 0, 0, 0, 0, false, stopwatch.Elapsed);
        }

        var resolved = await ResolveAsync(reference, options, cancellationToken).ConfigureAwait(false);
        var existing = await client.Images.FindAsync(name, cancellationToken).ConfigureAwait(false);
        // Before anything is fetched: a registry does not take over a name the agent has unless asked to.
        if (existing is not null && existing.Target.Digest != resolved.Target.Digest && !options.Replace)
            throw new ImageNameTakenException(name, existing.Target.Digest, resolved.Target.Digest);
        if (ImageUnpacker.RecordMatches(existing, resolved.Target, options.Labels)
            && await CompleteLocallyAsync(name, resolved.Target, options, cancellationToken).ConfigureAwait(false) is { } present)
        {
            progress?.Report(new PullProgress(name, PullPhase.Done, null, present.Size, present.Size));
            _logger.LogInformation("pull {Image}: {Digest} is already complete locally", name, resolved.Target.Digest);
            return new PulledImage(name, reference, resolved.Source.Registry, present.Target, present.Manifest, present.Config, present.ChainId,
                true, 0, 0, 0, 0, false, stopwatch.Elapsed);
        }

        var gate = LeaseGates.GetOrAdd(client.Namespace + "/" + resolved.ManifestDescriptor.Digest, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var leaseId = await TakeLeaseAsync(resolved.ManifestDescriptor.Digest, name, options, cancellationToken).ConfigureAwait(false);
            return await PullResolvedAsync(reference, name, resolved, leaseId, options, progress, stopwatch, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            gate.Release();
        }
    }

    // ---------------------------------------------------------------- resolve

    private sealed record Resolved(RegistryRepository Source, RegistryManifest? Index, RegistryManifest ManifestBlob, OciManifest Manifest)
    {
        public OciDescriptor Target => (Index ?? ManifestBlob).Descriptor;
        public OciDescriptor ManifestDescriptor => ManifestBlob.Descriptor;
    }

    private async Task<Resolved> ResolveAsync(ImageReference reference, PullOptions options, CancellationToken cancellationToken)
    {
        var failures = new List<Exception>();
        foreach (var source in registry.PullSources(reference))
        {
            RegistryManifest top;
            try
            {
                top = await source.GetManifestAsync(reference.ManifestReference, cancellationToken).ConfigureAwait(false);
            }
            catch (RegistryException e) when (source.Endpoint.IsMirror)
            {
                _logger.LogWarning("pull {Reference}: mirror {Mirror} failed, trying the next source: {Error}", reference, source.Registry, e.Message);
                failures.Add(e);
                continue;
            }

            return await ResolvePlatformAsync(reference, source, top, options.Platform, cancellationToken).ConfigureAwait(false);
        }

        throw failures.Count == 1 ? failures[0] : new AggregateException($"pull {reference}: every source failed", failures);
    }

    private static async Task<Resolved> ResolvePlatformAsync(ImageReference reference, RegistryRepository source, RegistryManifest top, OciPlatform platform,
        CancellationToken cancellationToken)
    {
        var what = $"pull {reference} from {source.Registry}";
        if (MediaTypes.IsManifest(top.MediaType))
        {
            return new Resolved(source, null, top, ParseManifest(what, top));
        }

        OciIndex index;
        try
        {
            index = ImageJson.DeserializeIndex(top.Content);
        }
        catch (JsonException e)
        {
            throw new ImageTransferException($"{what}: index {top.Digest} is not valid JSON: {e.Message}", e);
        }

        var candidates = index.Manifests.Where(m => m.Platform is { } p && p.OS == platform.OS && p.Architecture == platform.Architecture).ToList();
        var chosen = candidates.FirstOrDefault(m => platform.Variant is null || m.Platform!.Variant == platform.Variant)
            ?? throw new ImageTransferException($"{what}: {top.MediaType} {top.Digest} has no manifest for {platform} (it has: "
                + string.Join(", ", index.Manifests.Select(m => m.Platform?.ToString() ?? "no platform")) + ")");
        if (!MediaTypes.IsManifest(chosen.MediaType))
        {
            throw new ImageTransferException($"{what}: the {platform} entry of index {top.Digest} is a {chosen.MediaType}, not an image manifest");
        }

        var manifest = await source.GetManifestAsync(chosen.Digest, cancellationToken).ConfigureAwait(false);
        if (manifest.Content.Length != chosen.Size)
        {
            throw new BlobDigestMismatchException(source.Registry, chosen.Digest, $"{what}: manifest {chosen.Digest} is {manifest.Content.Length} bytes, the index says {chosen.Size}");
        }

        return new Resolved(source, top, manifest with { MediaType = chosen.MediaType }, ParseManifest(what, manifest));
    }

    private static OciManifest ParseManifest(string what, RegistryManifest blob)
    {
        OciManifest manifest;
        try
        {
            manifest = ImageJson.DeserializeManifest(blob.Content);
        }
        catch (JsonException e)
        {
            throw new ImageTransferException($"{what}: manifest {blob.Digest} is not valid JSON: {e.Message}", e);
        }

        if (!MediaTypes.IsConfig(manifest.Config.MediaType))
        {
            throw new ImageTransferException($"{what}: manifest {blob.Digest} has a config of type {manifest.Config.MediaType}: not a container image");
        }

        if (manifest.Layers.Count == 0)
        {
            throw new ImageTransferException($"{what}: manifest {blob.Digest} has no layers");
        }

        foreach (var descriptor in manifest.Layers.Append(manifest.Config))
        {
            OciDigest.Validate(descriptor.Digest, $"{what}: manifest {blob.Digest}");
            if (descriptor.Size < 0)
            {
                throw new ImageTransferException($"{what}: manifest {blob.Digest} gives blob {descriptor.Digest} a negative size");
            }
        }

        for (var i = 0; i < manifest.Layers.Count; i++)
        {
            if (!MediaTypes.IsLayer(manifest.Layers[i].MediaType))
            {
                throw new ImageTransferException($"{what}: layer {i} ({manifest.Layers[i].Digest}) has media type {manifest.Layers[i].MediaType}, not a layer this agent can unpack (uncompressed, gzip or zstd tar)");
            }
        }

        return manifest;
    }

    // ---------------------------------------------------------------- local state

    private sealed record LocalImage(OciDescriptor Target, OciDescriptor Manifest, ImageConfig Config, string ChainId, long Size);

    /// <summary>The image when every blob it needs is in the content store (and its snapshot chain exists, when unpacking); else null.</summary>
    private async Task<LocalImage?> CompleteLocallyAsync(string name, OciDescriptor target, PullOptions options, CancellationToken cancellationToken)
    {
        try
        {
            var current = target;
            long size = 0;
            if (MediaTypes.IsIndex(current.MediaType))
            {
                var indexInfo = await client.Content.FindAsync(current.Digest, cancellationToken).ConfigureAwait(false);
                if (indexInfo is null)
                {
                    return null;
                }

                var index = ImageJson.DeserializeIndex(await client.Content.ReadAllAsync(current.Digest, cancellationToken).ConfigureAwait(false));
                size += indexInfo.Size;
                current = index.Manifests.FirstOrDefault(m => m.Platform is { } p && p.OS == options.Platform.OS && p.Architecture == options.Platform.Architecture);
                if (current is null)
                {
                    return null;
                }
            }

            if (!MediaTypes.IsManifest(current.MediaType) || await client.Content.FindAsync(current.Digest, cancellationToken).ConfigureAwait(false) is null)
            {
                return null;
            }

            var manifest = ImageJson.DeserializeManifest(await client.Content.ReadAllAsync(current.Digest, cancellationToken).ConfigureAwait(false));
            size += current.Size;
            foreach (var blob in manifest.Layers.Append(manifest.Config).DistinctBy(b => b.Digest))
            {
                if (await client.Content.FindAsync(blob.Digest, cancellationToken).ConfigureAwait(false) is null)
                {
                    return null;
                }

                size += blob.Size;
            }

            var config = ImageConfig.Parse(await client.Content.ReadAllAsync(manifest.Config.Digest, cancellationToken).ConfigureAwait(false));
            var diffIds = config.Rootfs?.DiffIds ?? [];
            if (diffIds.Count != manifest.Layers.Count || diffIds.Count == 0)
            {
                return null;
            }

            var chainId = Images.ChainId.Of(diffIds);
            if (options.Unpack && await client.Snapshots.FindAsync(chainId, options.Snapshotter, cancellationToken).ConfigureAwait(false) is null)
            {
                return null;
            }

            return new LocalImage(target, current, config, chainId, size);
        }
        catch (Exception e) when (e is JsonException or InvalidSpecException or ContainerdNotFoundException)
        {
            _logger.LogInformation("pull {Image}: local copy of {Digest} is unusable ({Error}); pulling", name, target.Digest, e.Message);
            return null;
        }
    }

    // ---------------------------------------------------------------- fetch

    private sealed class PullState(ContainerdClient leased, string leaseId, string name, Resolved resolved, PullOptions options, ProgressBook book)
    {
        public ContainerdClient Leased { get; } = leased;
        public string LeaseId { get; } = leaseId;
        public string Name { get; } = name;
        public Resolved Resolved { get; } = resolved;
        public PullOptions Options { get; } = options;
        public ProgressBook Book { get; } = book;
        public ImageUnpacker Unpacker { get; } = new(leased, leaseId, options.Snapshotter, $"pulling {name}", (m, e) => new ImageTransferException(m, e));
        public ConcurrentDictionary<string, bool> OpenIngests { get; } = new();
        public bool RecordWritten { get; set; }
        public int BlobsFetched;
        public int BlobsResumed;
        public long BytesDownloaded;
    }

    private async Task<PulledImage> PullResolvedAsync(ImageReference reference, string name, Resolved resolved, string leaseId, PullOptions options,
        IProgress<PullProgress>? progress, Stopwatch stopwatch, CancellationToken cancellationToken)
    {
        var manifest = resolved.Manifest;
        var blobs = manifest.Layers.Prepend(manifest.Config).DistinctBy(b => b.Digest).ToList();
        var phase = PullPhase.Fetching;
        var book = new ProgressBook(blobs.Sum(b => b.Size), (blob, completed) => progress?.Report(new PullProgress(name, phase, blob, completed, blobs.Sum(b => b.Size))));
        using var leased = client.WithLease(leaseId);
        var state = new PullState(leased, leaseId, name, resolved, options, book);
        try
        {
            book.Phase();
            foreach (var blob in blobs)
            {
                book.Update(blob, 0, BlobState.Waiting);
            }

            // the config first: it is small, and a broken one should fail the pull before gigabytes of layers move
            await FetchBlobAsync(state, manifest.Config, cancellationToken).ConfigureAwait(false);
            var config = await ReadConfigAsync(state, cancellationToken).ConfigureAwait(false);
            var diffIds = config.Rootfs?.DiffIds ?? [];
            if (diffIds.Count != manifest.Layers.Count)
            {
                throw new ImageTransferException($"pulling {name}: manifest {resolved.ManifestDescriptor.Digest} has {manifest.Layers.Count} layers but config {manifest.Config.Digest} lists {diffIds.Count} diff_ids");
            }

            await Parallel.ForEachAsync(blobs.Skip(1), new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, registry.Options.MaxConcurrentTransfers), CancellationToken = cancellationToken },
                async (blob, ct) => await FetchBlobAsync(state, blob, ct).ConfigureAwait(false)).ConfigureAwait(false);

            await WriteManifestsAsync(state, cancellationToken).ConfigureAwait(false);
            var chainId = Images.ChainId.Of(diffIds);
            if (options.Unpack)
            {
                phase = PullPhase.Unpacking;
                book.Phase();
                if (options.MaxExpandedBytes is { } maxExpanded)
                {
                    await ExpansionLimit.CheckLayersAsync(manifest.Layers, (layer, ct) => Task.FromResult(ContentReadStream.Open(leased, layer.Digest, ct)),
                        maxExpanded, $"pulling {name}", cancellationToken).ConfigureAwait(false);
                }
                await state.Unpacker.UnpackAsync(manifest.Layers, diffIds, manifest.Config,
                    (i, done) => book.Update(manifest.Layers[i], manifest.Layers[i].Size, done ? BlobState.Unpacked : BlobState.Unpacking), cancellationToken).ConfigureAwait(false);
            }

            var changed = await ImageUnpacker.SetImageRecordAsync(leased, name, resolved.Target, options.Labels, $"pulling {name}",
                (m, e) => new ImageTransferException(m, e), cancellationToken).ConfigureAwait(false);
            state.RecordWritten = true;
            await TryAsync($"delete lease {leaseId}", () => client.Leases.DeleteAsync(leaseId, sync: false, CancellationToken.None)).ConfigureAwait(false);
            phase = PullPhase.Done;
            book.Phase();
            _logger.LogInformation("pulled {Image} ({Digest}) from {Source}: {Blobs} blobs fetched ({Resumed} resumed, {Bytes} bytes), {Snapshots} layers unpacked in {Elapsed}",
                name, resolved.Target.Digest, resolved.Source.Registry, state.BlobsFetched, state.BlobsResumed, state.BytesDownloaded, state.Unpacker.SnapshotsCommitted, stopwatch.Elapsed);
            return new PulledImage(name, reference, resolved.Source.Registry, resolved.Target, resolved.ManifestDescriptor, config, chainId, false,
                state.BlobsFetched, state.BlobsResumed, state.BytesDownloaded, state.Unpacker.SnapshotsCommitted, changed, stopwatch.Elapsed);
        }
        catch (Exception e) when (!state.RecordWritten)
        {
            var resumable = options.KeepPartialForResume && IsInterruption(e, cancellationToken);
            await RollBackAsync(state, keepForResume: resumable).ConfigureAwait(false);
            if (resumable)
            {
                _logger.LogWarning("pull of {Image} interrupted ({Error}); what it fetched stays under lease {Lease} for {Expiry} so the next pull resumes",
                    name, e.Message, leaseId, options.LeaseExpiry);
            }
            else
            {
                _logger.LogWarning("pull of {Image} failed, rolled back: {Error}", name, e.Message);
            }

            throw;
        }
    }

    private static bool IsInterruption(Exception e, CancellationToken cancellationToken)
        => (e is OperationCanceledException && cancellationToken.IsCancellationRequested) || e is RegistryUnavailableException
            || (e is AggregateException aggregate && aggregate.InnerExceptions.All(inner => IsInterruption(inner, cancellationToken)));

    /// <summary>
    /// A fresh lease for the pull. What interrupted pulls of the same manifest kept under their leases (blobs, partial
    /// ingests) moves onto it and their leases go, so a resumed pull gets the full expiry however old its leftovers are.
    /// </summary>
    private async Task<string> TakeLeaseAsync(string manifestDigest, string name, PullOptions options, CancellationToken cancellationToken)
    {
        var lease = await client.Leases.CreateAsync($"kata-agent-pull-{OciDigest.Hex(manifestDigest)[..16]}-{Guid.NewGuid():N}", options.LeaseExpiry,
            new Dictionary<string, string> { [LeaseLabel] = name, [ManifestLabel] = manifestDigest }, cancellationToken).ConfigureAwait(false);
        try
        {
            var earlier = (await client.Leases.ListAsync(cancellationToken).ConfigureAwait(false))
                .Where(l => l.Id != lease.Id && l.Labels.TryGetValue(ManifestLabel, out var digest) && digest == manifestDigest).ToList();
            foreach (var old in earlier)
            {
                var resources = await client.Leases.ListResourcesAsync(old.Id, cancellationToken).ConfigureAwait(false);
                foreach (var resource in resources)
                {
                    await client.Leases.AddResourceAsync(lease.Id, resource.Type, resource.Id, cancellationToken).ConfigureAwait(false);
                }

                await TryAsync($"delete lease {old.Id}", () => client.Leases.DeleteAsync(old.Id, sync: false, CancellationToken.None)).ConfigureAwait(false);
                _logger.LogInformation("pull {Image}: resuming what lease {Old} kept ({Count} resources)", name, old.Id, resources.Count);
            }
        }
        catch
        {
            await TryAsync($"delete lease {lease.Id}", () => client.Leases.DeleteAsync(lease.Id, sync: false, CancellationToken.None)).ConfigureAwait(false);
            throw;
        }

        return lease.Id;
    }

    private async Task<ImageConfig> ReadConfigAsync(PullState state, CancellationToken cancellationToken)
    {
        var descriptor = state.Resolved.Manifest.Config;
        if (descriptor.Size > MaxJsonBlob)
        {
            throw new ImageTransferException($"pulling {state.Name}: config {descriptor.Digest} is {descriptor.Size} bytes, too large for an image config");
        }

        try
        {
            return ImageConfig.Parse(await state.Leased.Content.ReadAllAsync(descriptor.Digest, cancellationToken).ConfigureAwait(false));
        }
        catch (Exception e) when (e is JsonException or InvalidSpecException)
        {
            throw new ImageTransferException($"pulling {state.Name}: config {descriptor.Digest} is not a valid image config: {e.Message}", e);
        }
    }

    /// <summary>Gets one blob into the content store: pinned if present, else downloaded (resuming a partial ingest) and digest-checked.</summary>
    private async Task FetchBlobAsync(PullState state, OciDescriptor blob, CancellationToken cancellationToken)
    {
        var content = state.Leased.Content;
        var source = state.Resolved.Source;
        if (await content.FindAsync(blob.Digest, cancellationToken).ConfigureAwait(false) is not null)
        {
            await state.Leased.Leases.AddResourceAsync(state.LeaseId, "content", blob.Digest, cancellationToken).ConfigureAwait(false);
            state.Book.Update(blob, blob.Size, BlobState.Present);
            return;
        }

        var reference = IngestRef(blob.Digest);
        for (var attempt = 1; ; attempt++)
        {
            var offset = await ResumeOffsetAsync(state, reference, blob, cancellationToken).ConfigureAwait(false);
            state.OpenIngests[reference] = true;
            state.Book.Update(blob, offset, BlobState.Transferring);
            DownloadStream? stream = null;
            try
            {
#pragma warning disable CA2007 // may be null, which `await using` allows and ConfigureAwait does not; no context to capture here
                await using var download = offset < blob.Size || blob.Size == 0
                    ? await source.OpenBlobAsync(blob.Digest, offset < blob.Size ? offset : 0, cancellationToken).ConfigureAwait(false)
                    : null;
#pragma warning restore CA2007
#pragma warning disable CA2000 // disposed in the finally below on every path, retries included
                stream = new DownloadStream(download?.Content ?? Stream.Null, download?.Offset ?? offset, blob.Size, blob.Digest, source.Registry,
                    registry.Options.StallTimeout, position => state.Book.Update(blob, position, BlobState.Transferring));
#pragma warning restore CA2000
                await content.WriteAsync(reference, stream, blob.Size, blob.Digest, labels: null, cancellationToken).ConfigureAwait(false);
                Interlocked.Add(ref state.BytesDownloaded, stream.BytesReceived);
                Interlocked.Increment(ref state.BlobsFetched);
                if (stream.ResumedFrom > 0)
                {
                    Interlocked.Increment(ref state.BlobsResumed);
                }

                state.OpenIngests.TryRemove(reference, out _);
                state.Book.Update(blob, blob.Size, BlobState.Done);
                return;
            }
            catch (BlobDigestMismatchException)
            {
                Interlocked.Add(ref state.BytesDownloaded, stream?.BytesReceived ?? 0);
                await AbortIngestAsync(reference).ConfigureAwait(false);
                throw;
            }
            catch (ContainerdFailedPreconditionException e) when (e.Detail.Contains("digest", StringComparison.OrdinalIgnoreCase) || e.Detail.Contains("size", StringComparison.OrdinalIgnoreCase))
            {
                // a resumed ingest: containerd hashed the whole of it on commit
                await AbortIngestAsync(reference).ConfigureAwait(false);
                throw new BlobDigestMismatchException(source.Registry, blob.Digest,
                    $"blob {blob.Digest} ({blob.Size} bytes) from registry {source.Registry} is corrupt: the content store refused it: {e.Detail}");
            }
            catch (Exception e) when (attempt < 20 && !cancellationToken.IsCancellationRequested && (e is IngestOffsetException || IsLocked(e)))
            {
                Interlocked.Add(ref state.BytesDownloaded, stream?.BytesReceived ?? 0);
                // the previous writer of this ref has not let go yet, or the ingest moved under us: look again
                _logger.LogDebug("pull {Image}: blob {Digest}: {Error}; retrying", state.Name, blob.Digest, e.Message);
                await Task.Delay(TimeSpan.FromMilliseconds(100 * Math.Min(attempt, 10)), cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                Interlocked.Add(ref state.BytesDownloaded, stream?.BytesReceived ?? 0);
                throw;
            }
            finally
            {
                if (stream is not null)
                {
                    await stream.DisposeAsync().ConfigureAwait(false);
                }
            }
        }
    }

    private static bool IsLocked(Exception e)
        => e is ContainerdException c && (c is ContainerdUnavailableException || c.Detail.Contains("locked", StringComparison.OrdinalIgnoreCase));

    /// <summary>Where a partial ingest of the blob stands (0 when there is none, or it is for other bytes and was aborted).</summary>
    private async Task<long> ResumeOffsetAsync(PullState state, string reference, OciDescriptor blob, CancellationToken cancellationToken)
    {
        var status = await state.Leased.Content.StatusAsync(reference, cancellationToken).ConfigureAwait(false);
        if (status is null)
        {
            return 0;
        }

        if ((status.Expected.Length == 0 || status.Expected == blob.Digest) && (status.Total == 0 || status.Total == blob.Size) && status.Offset <= blob.Size)
        {
            // make sure the ingest is ours to keep (it may be left from a pull whose lease has gone)
            await state.Leased.Leases.AddResourceAsync(state.LeaseId, "ingests", reference, cancellationToken).ConfigureAwait(false);
            return status.Offset;
        }

        await AbortIngestAsync(reference).ConfigureAwait(false);
        return 0;
    }

    private async Task WriteManifestsAsync(PullState state, CancellationToken cancellationToken)
    {
        var resolved = state.Resolved;
        await WriteJsonBlobAsync(state, resolved.ManifestBlob, GcLabels.ForManifest(resolved.Manifest), cancellationToken).ConfigureAwait(false);
        if (resolved.Index is { } index)
        {
            var parsed = ImageJson.DeserializeIndex(index.Content);
            var labels = new Dictionary<string, string>();
            for (var i = 0; i < parsed.Manifests.Count; i++)
            {
                labels[GcLabels.ContentManifestPrefix + i] = parsed.Manifests[i].Digest;
            }

            await WriteJsonBlobAsync(state, index, labels, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task WriteJsonBlobAsync(PullState state, RegistryManifest blob, IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken)
    {
        var content = state.Leased.Content;
        if (await content.FindAsync(blob.Digest, cancellationToken).ConfigureAwait(false) is { } existing)
        {
            await state.Leased.Leases.AddResourceAsync(state.LeaseId, "content", blob.Digest, cancellationToken).ConfigureAwait(false);
            await ImageUnpacker.EnsureLabelsAsync(state.Leased, existing, labels, cancellationToken).ConfigureAwait(false);
            return;
        }

        var reference = IngestRef(blob.Digest);
        state.OpenIngests[reference] = true;
        using var stream = new MemoryStream(blob.Content, writable: false);
        await content.WriteAsync(reference, stream, blob.Content.Length, blob.Digest, labels, cancellationToken).ConfigureAwait(false);
        state.OpenIngests.TryRemove(reference, out _);
    }

    // ---------------------------------------------------------------- rollback

    private async Task RollBackAsync(PullState state, bool keepForResume)
    {
        // best effort, and never with the caller's (possibly cancelled) token
        await state.Unpacker.RemovePreparedAsync(client, (what, e) => _logger.LogWarning("pull rollback: cannot {What}: {Error}", what, e.Message)).ConfigureAwait(false);
        if (keepForResume)
        {
            return;
        }

        foreach (var reference in state.OpenIngests.Keys)
        {
            await AbortIngestAsync(reference).ConfigureAwait(false);
        }

        // a synchronous GC: what only this pull referenced is gone when we return
        await TryAsync($"delete lease {state.LeaseId}", () => client.Leases.DeleteAsync(state.LeaseId, sync: true)).ConfigureAwait(false);
    }

    private async Task AbortIngestAsync(string reference)
    {
        // the writer that held the ref may take a moment to let go of it
        for (var attempt = 0; attempt < 20; attempt++)
        {
            try
            {
                if (await client.Content.StatusAsync(reference).ConfigureAwait(false) is not null)
                {
                    await client.Content.AbortAsync(reference).ConfigureAwait(false);
                }

                return;
            }
            catch (ContainerdNotFoundException)
            {
                return;
            }
            catch (ContainerdException e) when (IsLocked(e) && attempt < 19)
            {
                await Task.Delay(100).ConfigureAwait(false);
            }
            catch (ContainerdException e)
            {
                _logger.LogWarning("pull rollback: cannot abort ingest {Ref}: {Error}", reference, e.Message);
                return;
            }
        }
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
            _logger.LogWarning("pull: cannot {What}: {Error}", what, e.Message);
        }
    }
}
