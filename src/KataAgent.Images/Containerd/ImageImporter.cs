using System.Diagnostics;
using KataAgent.Containerd;
using KataAgent.Oci;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Images;

/// <summary>Options for <see cref="ImageImporter"/>.</summary>
public sealed record ImportOptions
{
    /// <summary>Name for the image record; default: the archive's name for it. Only for archives holding one image.</summary>
    public string? Name { get; init; }

    /// <summary>Labels on the image record.</summary>
    public IReadOnlyDictionary<string, string>? Labels { get; init; }

    /// <summary>Unpack the layers into a snapshot chain (needed before a container can use the image).</summary>
    public bool Unpack { get; init; } = true;

    public string Snapshotter { get; init; } = "overlayfs";

    /// <summary>Platform picked from multi-platform archives.</summary>
    public OciPlatform Platform { get; init; } = OciPlatform.Host;

    /// <summary>The import lease expires by itself after this long, should the agent die holding it.</summary>
    public TimeSpan LeaseExpiry { get; init; } = TimeSpan.FromHours(1);

    /// <summary>Where a compressed archive is decompressed to (see <see cref="OciArchiveOptions.TempDirectory"/>).</summary>
    public string? TempDirectory { get; init; }

    /// <summary>Let the import point an existing name at other content; otherwise that fails naming the image (<see cref="ImageNameGuard"/>).</summary>
    public bool Replace { get; init; }
    /// <summary>How far the image's layers (and a compressed archive) may expand; null: no cap. See <see cref="ExpansionLimit"/>.</summary>
    public long? MaxExpandedBytes { get; init; }
}

/// <summary>What an import did.</summary>
/// <param name="Name">the image record's name</param>
/// <param name="Target">the manifest the record points at</param>
/// <param name="Config">the image config</param>
/// <param name="ChainId">chain ID of the top layer: the name of the image's committed snapshot</param>
/// <param name="BlobsWritten">blobs written to the content store (0 when all were present)</param>
/// <param name="SnapshotsCommitted">layers unpacked (0 when the snapshot chain existed)</param>
/// <param name="RecordChanged">whether the image record was created or changed</param>
public sealed record ImportedImage(
    string Name,
    OciDescriptor Target,
    ImageConfig Config,
    string ChainId,
    int BlobsWritten,
    int SnapshotsCommitted,
    bool RecordChanged,
    TimeSpan Elapsed);

/// <summary>
/// Imports image archives (<see cref="OciArchive"/>: OCI layout or docker save) into containerd, the way containerd's
/// own import and unpack do it:
/// <list type="number">
/// <item>a lease is taken, so garbage collection cannot remove a half-imported image;</item>
/// <item>layers, config and manifest go into the content store (blobs already present are not rewritten), digest-checked
///   while streamed; the manifest carries <c>containerd.io/gc.ref.content.*</c> labels naming its config and layers;</item>
/// <item>layers are unpacked through the diff service into a snapshot chain named by chain IDs (Prepare on the parent,
///   Diff.Apply, Commit; existing snapshots are reused), and the config is labelled
///   <c>containerd.io/gc.ref.snapshot.&lt;snapshotter&gt;</c> with the top chain ID;</item>
/// <item>only then is the image record created or pointed at the manifest, and the lease released.</item>
/// </list>
/// Importing the same archive again changes nothing. A failed import leaves no image record; its lease is deleted (with a
/// synchronous GC) so whatever it wrote is collected, and its partial ingests and prepared snapshots are removed.
/// </summary>
public sealed class ImageImporter(ContainerdClient client, ILogger? logger = null)
{
    private const string LeaseLabel = "kata-agent/import";
    private readonly ILogger _logger = logger ?? NullLogger.Instance;

    /// <summary>Imports every image of the archive file.</summary>
    public async Task<IReadOnlyList<ImportedImage>> ImportAsync(string archivePath, ImportOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new ImportOptions();
        var archive = await OciArchive.OpenAsync(archivePath,
            new OciArchiveOptions { Platform = options.Platform, TempDirectory = options.TempDirectory, MaxDecompressedBytes = options.MaxExpandedBytes }, cancellationToken).ConfigureAwait(false);
        await using var archiveDisposal = archive.ConfigureAwait(false);
        if (options.Name is not null && archive.Images.Count != 1)
        {
            throw new ArgumentException($"ImportOptions.Name is set but {archivePath} holds {archive.Images.Count} images", nameof(options));
        }

        var result = new List<ImportedImage>();
        foreach (var image in archive.Images)
        {
            var names = options.Name is not null ? [options.Name] : image.Names;
            if (names.Count == 0)
            {
                throw new ImageImportException($"image {image.ManifestDescriptor.Digest} in {archivePath} has no name; set ImportOptions.Name");
            }

            foreach (var name in names)
            {
                result.Add(await ImportAsync(archive, image, name, options, cancellationToken).ConfigureAwait(false));
            }
        }

        return result;
    }

    /// <summary>Imports one image of an open archive under <paramref name="name"/>.</summary>
    public async Task<ImportedImage> ImportAsync(OciArchive archive, ArchiveImage image, string name, ImportOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new ImportOptions();
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        await RefuseTakeoverAsync(name, image, options, cancellationToken).ConfigureAwait(false);
        var stopwatch = Stopwatch.StartNew();
        // Before the lease: a refused image has written nothing.
        if (options.Unpack && options.MaxExpandedBytes is { } maxExpanded)
        {
            await ExpansionLimit.CheckLayersAsync(image.Layers, (layer, _) => Task.FromResult(archive.OpenBlob(layer)), maxExpanded, $"importing {name}",
                cancellationToken).ConfigureAwait(false);
        }
        var lease = await client.Leases.CreateAsync(
            $"kata-agent-import-{Guid.NewGuid():N}", options.LeaseExpiry,
            new Dictionary<string, string> { [LeaseLabel] = name }, cancellationToken).ConfigureAwait(false);
        var leased = client.WithLease(lease.Id);
        var state = new ImportState(leased, lease.Id, archive, image, name, options);
        try
        {
            await WriteContentAsync(state, cancellationToken).ConfigureAwait(false);
            var chainId = ChainId.Of(image.DiffIds);
            if (options.Unpack)
            {
                await UnpackAsync(state, cancellationToken).ConfigureAwait(false);
            }

            var recordChanged = await SetImageRecordAsync(state, cancellationToken).ConfigureAwait(false);
            // the record now references everything: the lease has done its job (and expires by itself should this fail)
            await TryAsync($"delete lease {lease.Id}", () => client.Leases.DeleteAsync(lease.Id, sync: false, CancellationToken.None)).ConfigureAwait(false);
            _logger.LogInformation("imported {Image} ({Digest}): {Blobs} blobs written, {Snapshots} layers unpacked in {Elapsed}",
                name, image.ManifestDescriptor.Digest, state.BlobsWritten, state.SnapshotsCommitted, stopwatch.Elapsed);
            return new ImportedImage(name, ToTarget(image.ManifestDescriptor), image.Config, chainId,
                state.BlobsWritten, state.SnapshotsCommitted, recordChanged, stopwatch.Elapsed);
        }
        catch (Exception e) when (!state.RecordWritten)
        {
            _logger.LogWarning("import of {Image} failed, rolling back: {Error}", name, e.Message);
            await RollBackAsync(state).ConfigureAwait(false);
            throw;
        }
    }

    private sealed class ImportState(ContainerdClient leased, string leaseId, OciArchive archive, ArchiveImage image, string name, ImportOptions options)
    {
        public ContainerdClient Leased { get; } = leased;
        public string LeaseId { get; } = leaseId;
        public OciArchive Archive { get; } = archive;
        public ArchiveImage Image { get; } = image;
        public string Name { get; } = name;
        public ImportOptions Options { get; } = options;
        public int BlobsWritten { get; set; }
        public ImageUnpacker Unpacker { get; } = new(leased, leaseId, options.Snapshotter, $"importing {name}", Fail);
        public int SnapshotsCommitted => Unpacker.SnapshotsCommitted;
        public bool RecordWritten { get; set; }
        public HashSet<string> OpenIngests { get; } = [];
    }

    // ---------------------------------------------------------------- content

    private async Task WriteContentAsync(ImportState state, CancellationToken cancellationToken)
    {
        var image = state.Image;
        foreach (var layer in image.Layers.DistinctBy(l => l.Digest))
        {
            await WriteBlobAsync(state, layer, null, cancellationToken).ConfigureAwait(false);
        }

        await WriteBlobAsync(state, image.ConfigDescriptor, null, cancellationToken).ConfigureAwait(false);
        await WriteBlobAsync(state, image.ManifestDescriptor, GcLabels.ForManifest(image.Manifest), cancellationToken).ConfigureAwait(false);
    }

    private async Task WriteBlobAsync(ImportState state, OciDescriptor blob, IReadOnlyDictionary<string, string>? labels, CancellationToken cancellationToken)
    {
        var content = state.Leased.Content;
        var existing = await content.FindAsync(blob.Digest, cancellationToken).ConfigureAwait(false);
        if (existing is not null)
        {
            // present already: pin it to our lease (it may be unreferenced garbage) and make sure it carries our labels
            await state.Leased.Leases.AddResourceAsync(state.LeaseId, "content", blob.Digest, cancellationToken).ConfigureAwait(false);
            if (labels is not null)
            {
                await ImageUnpacker.EnsureLabelsAsync(state.Leased, existing, labels, cancellationToken).ConfigureAwait(false);
            }

            return;
        }

        var reference = $"kata-agent-import-{OciDigest.Hex(blob.Digest)}";
        state.OpenIngests.Add(reference);
        try
        {
            var stream = state.Archive.OpenBlob(blob);
            await using var streamDisposal = stream.ConfigureAwait(false);
            await content.WriteAsync(reference, stream, blob.Size, blob.Digest, labels, cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdException e)
        {
            throw new ImageImportException($"importing {state.Name}: writing blob {blob.Digest} ({blob.MediaType}, {blob.Size} bytes) to the content store failed: {e.Message}", e);
        }

        state.OpenIngests.Remove(reference);
        state.BlobsWritten++;
    }

    // ---------------------------------------------------------------- unpack and record

    private async Task UnpackAsync(ImportState state, CancellationToken cancellationToken)
    {
        var image = state.Image;
        await state.Unpacker.UnpackAsync(image.Layers, image.DiffIds, image.ConfigDescriptor, null, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Before anything is written: an existing name keeps its content unless the caller asked to replace it.</summary>
    private Task RefuseTakeoverAsync(string name, ArchiveImage image, ImportOptions options, CancellationToken cancellationToken) =>
        ImageNameGuard.EnsureMayPointAsync(client, name, image.ManifestDescriptor.Digest, options.Replace, cancellationToken);

    private static async Task<bool> SetImageRecordAsync(ImportState state, CancellationToken cancellationToken)
    {
        var changed = await ImageUnpacker.SetImageRecordAsync(state.Leased, state.Name, state.Image.ManifestDescriptor, state.Options.Labels,
            $"importing {state.Name}", Fail, cancellationToken).ConfigureAwait(false);
        state.RecordWritten = true;
        return changed;
    }

    private static Exception Fail(string message, Exception? inner) => new ImageImportException(message, inner);

    private static OciDescriptor ToTarget(OciDescriptor manifest) => manifest with { Annotations = null };

    // ---------------------------------------------------------------- rollback

    private async Task RollBackAsync(ImportState state)
    {
        // best effort, and never with the caller's (possibly cancelled) token
        await state.Unpacker.RemovePreparedAsync(client, (what, e) => _logger.LogWarning("import rollback: cannot {What}: {Error}", what, e.Message)).ConfigureAwait(false);

        foreach (var reference in state.OpenIngests)
        {
            await TryAsync($"abort ingest {reference}", async () =>
            {
                if (await client.Content.StatusAsync(reference).ConfigureAwait(false) is not null)
                {
                    await client.Content.AbortAsync(reference).ConfigureAwait(false);
                }
            }).ConfigureAwait(false);
        }

        // a synchronous GC: what only this import referenced is gone when we return
        await TryAsync($"delete lease {state.LeaseId}", () => client.Leases.DeleteAsync(state.LeaseId, sync: true)).ConfigureAwait(false);
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
            _logger.LogWarning("import rollback: cannot {What}: {Error}", what, e.Message);
        }
    }
}
