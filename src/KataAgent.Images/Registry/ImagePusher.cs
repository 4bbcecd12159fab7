using System.Diagnostics;
using System.Text.Json;
using KataAgent.Containerd;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Images.Registry;

/// <summary>Options for <see cref="ImagePusher"/>.</summary>
public sealed record PushOptions
{
    public BlobUploadMode UploadMode { get; init; } = BlobUploadMode.Auto;

    /// <summary>With <see cref="BlobUploadMode.Auto"/>: blobs up to this size go in one PUT, larger ones in chunks.</summary>
    public long MonolithicLimit { get; init; } = 64L * 1024 * 1024;

    /// <summary>Bytes per PATCH in a chunked upload.</summary>
    public long ChunkSize { get; init; } = 16L * 1024 * 1024;

    /// <summary>When the local image is an index: push only this platform's manifest (under the tag) instead of the whole index.</summary>
    public OciPlatform? Platform { get; init; }
}

/// <summary>What a push did.</summary>
/// <param name="Target">what the tag now points at in the registry (manifest or index)</param>
/// <param name="BlobsUploaded">blobs sent</param>
/// <param name="BlobsSkipped">blobs the registry already had</param>
/// <param name="BytesUploaded">blob bytes sent</param>
public sealed record PushedImage(string Image, ImageReference Reference, OciDescriptor Target, int BlobsUploaded, int BlobsSkipped, long BytesUploaded, TimeSpan Elapsed);

/// <summary>
/// Pushes an image from containerd's content store to a registry: asks the registry which blobs it has (HEAD), uploads
/// the others (a bounded number at once; monolithic PUT or chunked PATCH), then puts the manifests — an index's platform
/// manifests by digest first, then the top manifest or index under the tag. The bytes pushed are exactly the stored
/// ones, so the digests in the registry are the local digests.
/// </summary>
public sealed class ImagePusher(ContainerdClient client, RegistryClient registry, ILogger? logger = null)
{
    private const int MaxJsonBlob = 16 * 1024 * 1024;
    private readonly ILogger _logger = logger ?? NullLogger.Instance;

    public Task<PushedImage> PushAsync(string image, string destination, PushOptions? options = null, IProgress<PushProgress>? progress = null, CancellationToken cancellationToken = default)
        => PushAsync(image, ImageReference.Parse(destination), options, progress, cancellationToken);

    /// <param name="image">name of the local image record</param>
    /// <param name="destination">where to push; its tag (or, without one, its digest) names the pushed manifest</param>
    public async Task<PushedImage> PushAsync(string image, ImageReference destination, PushOptions? options = null, IProgress<PushProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        options ??= new PushOptions();
        if (options.ChunkSize < 1 || options.MonolithicLimit < 0)
        {
            throw new ArgumentException("PushOptions.ChunkSize must be positive and MonolithicLimit not negative", nameof(options));
        }

        var stopwatch = Stopwatch.StartNew();
        var what = $"pushing {image} to {destination}";
        progress?.Report(new PushProgress(image, PushPhase.Preparing, null, 0, 0));
        var plan = await PlanAsync(image, options, what, cancellationToken).ConfigureAwait(false);
        if (destination.Digest is { } pinned && pinned != plan.Top.Digest)
        {
            throw new ImageTransferException($"{what}: the destination pins digest {pinned}, but the image to push is {plan.Top.Digest}");
        }

        var repository = registry.Repository(destination, push: true);
        var phase = PushPhase.Preparing;
        var blobs = plan.Blobs;
        var book = new ProgressBook(blobs.Sum(b => b.Size), (blob, completed) => progress?.Report(new PushProgress(image, phase, blob, completed, blobs.Sum(b => b.Size))));
        foreach (var blob in blobs)
        {
            book.Update(blob, 0, BlobState.Waiting);
        }

        phase = PushPhase.Uploading;
        book.Phase();
        var uploaded = 0;
        var skipped = 0;
        long bytes = 0;
        await Parallel.ForEachAsync(blobs, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, registry.Options.MaxConcurrentTransfers), CancellationToken = cancellationToken },
            async (blob, ct) =>
            {
                if (await repository.BlobExistsAsync(blob.Digest, ct).ConfigureAwait(false))
                {
                    Interlocked.Increment(ref skipped);
                    book.Update(blob, blob.Size, BlobState.Present);
                    return;
                }

                var mode = options.UploadMode == BlobUploadMode.Auto
                    ? blob.Size <= options.MonolithicLimit ? BlobUploadMode.Monolithic : BlobUploadMode.Chunked
                    : options.UploadMode;
                long sent = 0;
                book.Update(blob, 0, BlobState.Transferring);
                await repository.UploadBlobAsync(blob, (offset, length, destinationStream, token) =>
                        client.Content.ReadAsync(blob.Digest, destinationStream, offset, length, token),
                    mode, options.ChunkSize, n =>
                    {
                        sent += n;
                        Interlocked.Add(ref bytes, n);
                        book.Update(blob, Math.Min(sent, blob.Size), BlobState.Transferring);
                    }, ct).ConfigureAwait(false);
                Interlocked.Increment(ref uploaded);
                book.Update(blob, blob.Size, BlobState.Done);
            }).ConfigureAwait(false);

        phase = PushPhase.Manifests;
        book.Phase();
        foreach (var child in plan.Children)
        {
            await repository.PutManifestAsync(child.Descriptor.Digest, child.Descriptor.MediaType, child.Content, cancellationToken).ConfigureAwait(false);
        }

        await repository.PutManifestAsync(destination.Tag ?? plan.Top.Digest, plan.Top.MediaType, plan.TopContent, cancellationToken).ConfigureAwait(false);
        phase = PushPhase.Done;
        book.Phase();
        _logger.LogInformation("pushed {Image} to {Destination} ({Digest}): {Uploaded} blobs uploaded ({Bytes} bytes), {Skipped} already there, in {Elapsed}",
            image, destination, plan.Top.Digest, uploaded, bytes, skipped, stopwatch.Elapsed);
        return new PushedImage(image, destination, plan.Top, uploaded, skipped, bytes, stopwatch.Elapsed);
    }

    private sealed record StoredManifest(OciDescriptor Descriptor, byte[] Content, OciManifest Manifest);

    private sealed record PushPlan(OciDescriptor Top, byte[] TopContent, IReadOnlyList<StoredManifest> Children, IReadOnlyList<OciDescriptor> Blobs);

    /// <summary>What to send: the top manifest or index, platform manifests under an index, and every blob they reference (all checked present).</summary>
    private async Task<PushPlan> PlanAsync(string image, PushOptions options, string what, CancellationToken cancellationToken)
    {
        var record = await client.Images.FindAsync(image, cancellationToken).ConfigureAwait(false)
            ?? throw new ImageTransferException($"{what}: there is no local image {image}");
        var top = new OciDescriptor { MediaType = record.Target.MediaType, Digest = record.Target.Digest, Size = record.Target.Size };
        var topContent = await ReadJsonAsync(top, what, cancellationToken).ConfigureAwait(false);
        var children = new List<StoredManifest>();
        StoredManifest? single = null;
        if (MediaTypes.IsManifest(top.MediaType))
        {
            single = new StoredManifest(top, topContent, ParseManifest(top, topContent, what));
        }
        else if (MediaTypes.IsIndex(top.MediaType))
        {
            OciIndex index;
            try
            {
                index = ImageJson.DeserializeIndex(topContent);
            }
            catch (JsonException e)
            {
                throw new ImageTransferException($"{what}: index {top.Digest} is not valid JSON: {e.Message}", e);
            }

            var entries = index.Manifests.Where(m => MediaTypes.IsManifest(m.MediaType)).ToList();
            if (options.Platform is { } platform)
            {
                var entry = entries.FirstOrDefault(m => m.Platform is { } p && p.OS == platform.OS && p.Architecture == platform.Architecture)
                    ?? throw new ImageTransferException($"{what}: index {top.Digest} has no manifest for {platform}");
                var content = await ReadJsonAsync(entry, what, cancellationToken).ConfigureAwait(false);
                single = new StoredManifest(entry, content, ParseManifest(entry, content, what));
            }
            else
            {
                var missing = new List<string>();
                foreach (var entry in entries)
                {
                    if (await client.Content.FindAsync(entry.Digest, cancellationToken).ConfigureAwait(false) is null)
                    {
                        missing.Add(entry.Platform?.ToString() ?? entry.Digest);
                        continue;
                    }

                    var content = await ReadJsonAsync(entry, what, cancellationToken).ConfigureAwait(false);
                    children.Add(new StoredManifest(entry, content, ParseManifest(entry, content, what)));
                }

                if (missing.Count > 0)
                {
                    throw new ImageTransferException($"{what}: index {top.Digest} lists manifests that are not stored locally ({string.Join(", ", missing)}); set PushOptions.Platform to push one platform");
                }
            }
        }
        else
        {
            throw new ImageTransferException($"{what}: the image record points at {top.MediaType}, neither a manifest nor an index");
        }

        var manifests = single is not null ? [single] : children;
        var blobs = manifests.SelectMany(m => m.Manifest.Layers.Prepend(m.Manifest.Config)).DistinctBy(b => b.Digest).ToList();
        foreach (var blob in blobs)
        {
            var info = await client.Content.FindAsync(blob.Digest, cancellationToken).ConfigureAwait(false)
                ?? throw new ImageTransferException($"{what}: blob {blob.Digest} ({blob.MediaType}) is not in the local content store");
            if (info.Size != blob.Size)
            {
                throw new ImageTransferException($"{what}: blob {blob.Digest} is {info.Size} bytes in the content store, the manifest says {blob.Size}");
            }
        }

        return single is not null
            ? new PushPlan(single.Descriptor, single.Content, [], blobs)
            : new PushPlan(top, topContent, children, blobs);
    }

    private static OciManifest ParseManifest(OciDescriptor descriptor, byte[] content, string what)
    {
        try
        {
            return ImageJson.DeserializeManifest(content);
        }
        catch (JsonException e)
        {
            throw new ImageTransferException($"{what}: manifest {descriptor.Digest} is not valid JSON: {e.Message}", e);
        }
    }

    private async Task<byte[]> ReadJsonAsync(OciDescriptor descriptor, string what, CancellationToken cancellationToken)
    {
        if (descriptor.Size > MaxJsonBlob)
        {
            throw new ImageTransferException($"{what}: {descriptor.MediaType} {descriptor.Digest} is {descriptor.Size} bytes, too large");
        }

        byte[] data;
        try
        {
            data = await client.Content.ReadAllAsync(descriptor.Digest, cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException e)
        {
            throw new ImageTransferException($"{what}: {descriptor.MediaType} {descriptor.Digest} is not in the local content store", e);
        }

        if (OciDigest.Compute(data) != descriptor.Digest)
        {
            throw new ImageTransferException($"{what}: {descriptor.Digest} in the content store does not match its digest");
        }

        return data;
    }
}
