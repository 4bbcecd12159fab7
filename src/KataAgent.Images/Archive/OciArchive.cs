using System.Formats.Tar;
using System.IO.Compression;
using System.Text.Json;
using KataAgent.Oci;

namespace KataAgent.Images;

/// <summary>Options for <see cref="OciArchive.OpenAsync"/>.</summary>
public sealed record OciArchiveOptions
{
    /// <summary>Platform picked from multi-platform indexes. Default: the host's (linux/amd64 here).</summary>
    public OciPlatform Platform { get; init; } = OciPlatform.Host;

    /// <summary>Where a gzip/zstd-compressed archive is decompressed to before reading. Default: the system temp dir.</summary>
    public string? TempDirectory { get; init; }

    /// <summary>A compressed archive that decompresses to more than this is refused (and its temp file removed); null: no cap.</summary>
    public long? MaxDecompressedBytes { get; init; }

    /// <summary>Largest manifest, index or config blob read into memory.</summary>
    public long MaxJsonBlobSize { get; init; } = 16 * 1024 * 1024;
}

/// <summary>
/// Reads an image archive: an OCI image layout tar or a <c>docker save</c> tar (optionally gzip/zstd-compressed as a whole).
/// Opening indexes the tar, resolves every image to one platform manifest, and checks that every blob the images need is
/// present with the size its descriptor states; manifests, indexes and configs are read and digest-checked at open.
/// Layer blobs are digest-checked while streamed through <see cref="OpenBlob(OciDescriptor)"/> (or all at once with
/// <see cref="VerifyAsync"/>). Every problem raises <see cref="ImageArchiveException"/> naming the archive and blob.
/// </summary>
public sealed class OciArchive : IAsyncDisposable, IDisposable
{
    private const string RefNameAnnotation = "org.opencontainers.image.ref.name";
    private const string ContainerdNameAnnotation = "io.containerd.image.name";

    private readonly string _tarPath;
    private readonly string? _tempFile;
    private readonly Dictionary<string, TarItem> _entries;
    private readonly Dictionary<string, BlobSource> _blobs = new(StringComparer.Ordinal);
    private readonly OciArchiveOptions _options;
    private readonly long _fileLength;
    private int _disposed;

    private OciArchive(string path, string tarPath, string? tempFile, Dictionary<string, TarItem> entries, long fileLength, OciArchiveOptions options)
    {
        Path = path;
        _tarPath = tarPath;
        _tempFile = tempFile;
        _entries = entries;
        _fileLength = fileLength;
        _options = options;
    }

    /// <summary>The archive file as given to <see cref="OpenAsync"/>.</summary>
    public string Path { get; }

    public ImageArchiveFormat Format { get; private set; }

    /// <summary>The images in the archive, one per distinct platform manifest.</summary>
    public IReadOnlyList<ArchiveImage> Images { get; private set; } = [];

    /// <summary>The only image of the archive; throws when it holds several or none.</summary>
    public ArchiveImage SingleImage => Images.Count == 1
        ? Images[0]
        : throw new ImageArchiveException(ArchiveProblem.InvalidFormat, Path, null, $"expected exactly one image, found {Images.Count}");

    /// <summary>Opens and checks an archive. Throws <see cref="ImageArchiveException"/> when it is unreadable or inconsistent.</summary>
    public static async Task<OciArchive> OpenAsync(string path, OciArchiveOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new OciArchiveOptions();
        path = System.IO.Path.GetFullPath(path);
        if (!File.Exists(path))
        {
            throw new ImageArchiveException(ArchiveProblem.InvalidFormat, path, null, "file not found");
        }

        string? tempFile = null;
        try
        {
            var tarPath = path;
            var compression = await DetectCompressionAsync(path, cancellationToken).ConfigureAwait(false);
            if (compression != LayerCompression.None)
            {
                tempFile = await DecompressToTempAsync(path, compression, options, cancellationToken).ConfigureAwait(false);
                tarPath = tempFile;
            }

            var fileLength = new FileInfo(tarPath).Length;
            var entries = await IndexTarAsync(path, tarPath, fileLength, cancellationToken).ConfigureAwait(false);
            var archive = new OciArchive(path, tarPath, tempFile, entries, fileLength, options);
            try
            {
                await archive.LoadAsync(cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                tempFile = null; // the archive owns it now and deletes it
                await archive.DisposeAsync().ConfigureAwait(false);
                throw;
            }

            return archive;
        }
        catch
        {
            if (tempFile is not null)
            {
                TryDelete(tempFile);
            }

            throw;
        }
    }

    /// <summary>True when the archive holds the blob as part of one of its images.</summary>
    public bool ContainsBlob(string digest) => _blobs.ContainsKey(digest);

    /// <summary>Size of a blob of one of the images.</summary>
    public long GetBlobSize(string digest) => Source(digest).Size;

    /// <summary>
    /// Streams a blob of one of the images. The stream throws <see cref="ImageArchiveException"/> at its end when the
    /// content does not match the digest or size; dispose it when done.
    /// </summary>
    public Stream OpenBlob(string digest)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var source = Source(digest);
        return source switch
        {
            MemoryBlob m => new MemoryStream(m.Data, writable: false),
            TarBlob t => new VerifyingBlobStream(new FileSegmentStream(_tarPath, t.Item.Offset, t.Item.Length), t.Item.Length, digest, t.Size, Path),
            _ => throw new InvalidOperationException("unknown blob source"),
        };
    }

    /// <summary>Streams the blob a descriptor names (see <see cref="OpenBlob(string)"/>); checks the descriptor's size too.</summary>
    public Stream OpenBlob(OciDescriptor descriptor)
    {
        var size = GetBlobSize(descriptor.Digest);
        if (size != descriptor.Size)
        {
            throw new ImageArchiveException(ArchiveProblem.SizeMismatch, Path, descriptor.Digest,
                $"blob {descriptor.Digest} has {size} bytes in the archive but the descriptor says {descriptor.Size}");
        }

        return OpenBlob(descriptor.Digest);
    }

    /// <summary>Reads a whole blob into memory, verified.</summary>
    public async Task<byte[]> ReadBlobAsync(string digest, CancellationToken cancellationToken = default)
    {
        var size = GetBlobSize(digest);
        if (size > int.MaxValue)
        {
            throw new InvalidOperationException($"blob {digest} ({size} bytes) is too large to read into memory");
        }

        await using var stream = OpenBlob(digest);
        var buffer = new MemoryStream((int)size);
        await stream.CopyToAsync(buffer, cancellationToken).ConfigureAwait(false);
        return buffer.ToArray();
    }

    /// <summary>Reads every blob of every image and checks its digest and size.</summary>
    public async Task VerifyAsync(CancellationToken cancellationToken = default)
    {
        var buffer = new byte[1 << 16];
        foreach (var digest in _blobs.Keys)
        {
            await using var stream = OpenBlob(digest);
            while (await stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false) > 0)
            {
            }
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0 && _tempFile is not null)
        {
            TryDelete(_tempFile);
        }
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    // ---------------------------------------------------------------- tar index

    private sealed record TarItem(string Name, TarEntryType Type, long Offset, long Length, string? LinkName);

    private abstract record BlobSource(long Size);

    private sealed record TarBlob(TarItem Item, long Size) : BlobSource(Size);

    private sealed record MemoryBlob(byte[] Data) : BlobSource(Data.Length);

    private static async Task<Dictionary<string, TarItem>> IndexTarAsync(string displayPath, string tarPath, long fileLength, CancellationToken cancellationToken)
    {
        var entries = new Dictionary<string, TarItem>(StringComparer.Ordinal);
        var stream = new FileStream(tarPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous);
        await using (stream.ConfigureAwait(false))
        {
            var reader = new TarReader(stream, leaveOpen: true);
            await using (reader.ConfigureAwait(false))
            {
                while (true)
                {
                    TarEntry? entry;
                    try
                    {
                        entry = await reader.GetNextEntryAsync(copyData: false, cancellationToken).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is InvalidDataException or EndOfStreamException or FormatException or ArgumentException)
                    {
                        throw new ImageArchiveException(ArchiveProblem.InvalidFormat, displayPath, null,
                            $"not a readable tar archive (after {entries.Count} entries): {e.Message}", e);
                    }

                    if (entry is null)
                    {
                        break;
                    }

                    var name = NormalizeName(entry.Name);
                    if (name.Length == 0)
                    {
                        continue;
                    }

                    var item = new TarItem(name, entry.EntryType, entry.DataOffset, entry.Length, entry.LinkName);
                    if (item.Type is TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile
                        && item.Offset + item.Length > fileLength)
                    {
                        throw new ImageArchiveException(ArchiveProblem.Truncated, displayPath, DigestOfBlobPath(name),
                            $"the archive is truncated: entry {name} needs {item.Length} bytes at offset {item.Offset}, but the file has {fileLength} bytes");
                    }

                    entries[name] = item; // a later entry of the same name wins, as on extraction
                }
            }
        }

        if (entries.Count == 0)
        {
            throw new ImageArchiveException(ArchiveProblem.InvalidFormat, displayPath, null, "the tar archive is empty");
        }

        return entries;
    }

    private static string NormalizeName(string name)
    {
        var parts = new List<string>();
        foreach (var part in name.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == ".")
            {
                continue;
            }

            if (part == "..")
            {
                if (parts.Count > 0)
                {
                    parts.RemoveAt(parts.Count - 1);
                }

                continue;
            }

            parts.Add(part);
        }

        return string.Join('/', parts);
    }

    private static string? DigestOfBlobPath(string name)
        => name.StartsWith("blobs/sha256/", StringComparison.Ordinal) && OciDigest.IsValid("sha256:" + name["blobs/sha256/".Length..])
            ? "sha256:" + name["blobs/sha256/".Length..]
            : null;

    /// <summary>Finds a regular-file entry, following symlinks and hard links inside the archive.</summary>
    private TarItem? FindFile(string name)
    {
        name = NormalizeName(name);
        for (var hop = 0; hop < 16; hop++)
        {
            if (!_entries.TryGetValue(name, out var item))
            {
                return null;
            }

            switch (item.Type)
            {
                case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                    return item;
                case TarEntryType.HardLink when item.LinkName is not null:
                    name = NormalizeName(item.LinkName);
                    break;
                case TarEntryType.SymbolicLink when item.LinkName is not null:
                    var dir = name.Contains('/', StringComparison.Ordinal) ? name[..name.LastIndexOf('/')] : "";
                    name = NormalizeName(item.LinkName.StartsWith('/') ? item.LinkName : dir + "/" + item.LinkName);
                    break;
                default:
                    return null;
            }
        }

        throw new ImageArchiveException(ArchiveProblem.InvalidFormat, Path, null, $"too many links resolving {name}");
    }

    private BlobSource Source(string digest)
        => _blobs.TryGetValue(digest, out var source)
            ? source
            : throw new ImageArchiveException(ArchiveProblem.MissingBlob, Path, digest, $"blob {digest} is not part of any image in the archive");

    private async Task<byte[]> ReadEntryAsync(TarItem item, CancellationToken cancellationToken)
    {
        if (item.Length > _options.MaxJsonBlobSize)
        {
            throw new ImageArchiveException(ArchiveProblem.Unsupported, Path, DigestOfBlobPath(item.Name),
                $"{item.Name} is {item.Length} bytes, more than the {_options.MaxJsonBlobSize} allowed for a JSON document");
        }

        var data = new byte[item.Length];
        await using var stream = new FileSegmentStream(_tarPath, item.Offset, item.Length);
        await stream.ReadExactlyAsync(data, cancellationToken).ConfigureAwait(false);
        return data;
    }

    // ---------------------------------------------------------------- formats

    private async Task LoadAsync(CancellationToken cancellationToken)
    {
        if (FindFile("index.json") is not null)
        {
            Format = ImageArchiveFormat.OciLayout;
            await LoadOciLayoutAsync(cancellationToken).ConfigureAwait(false);
        }
        else if (FindFile("manifest.json") is not null)
        {
            Format = ImageArchiveFormat.DockerSave;
            await LoadDockerSaveAsync(cancellationToken).ConfigureAwait(false);
        }
        else
        {
            throw new ImageArchiveException(ArchiveProblem.InvalidFormat, Path, null,
                "neither an OCI image layout (no index.json) nor a docker-save archive (no manifest.json)");
        }

        if (Images.Count == 0)
        {
            throw new ImageArchiveException(ArchiveProblem.InvalidFormat, Path, null, "the archive holds no image");
        }
    }

    private T ParseJson<T>(byte[] data, string what, string? digest, Func<byte[], T> parse)
    {
        try
        {
            return parse(data);
        }
        catch (JsonException e)
        {
            throw new ImageArchiveException(ArchiveProblem.InvalidFormat, Path, digest, $"{what} is not valid: {e.Message}", e);
        }
    }

    // OCI image layout --------------------------------------------------

    private async Task LoadOciLayoutAsync(CancellationToken cancellationToken)
    {
        var layoutEntry = FindFile("oci-layout");
        if (layoutEntry is not null)
        {
            var marker = ParseJson(await ReadEntryAsync(layoutEntry, cancellationToken).ConfigureAwait(false), "oci-layout", null,
                d => ImageJson.DeserializeLayoutMarker(d));
            if (!marker.ImageLayoutVersion.StartsWith("1.", StringComparison.Ordinal))
            {
                throw new ImageArchiveException(ArchiveProblem.Unsupported, Path, null, $"unsupported imageLayoutVersion '{marker.ImageLayoutVersion}'");
            }
        }

        var indexData = await ReadEntryAsync(FindFile("index.json")!, cancellationToken).ConfigureAwait(false);
        var index = ParseJson(indexData, "index.json", null, d => ImageJson.DeserializeIndex(d));

        var byManifest = new Dictionary<string, ArchiveImage>(StringComparer.Ordinal);
        var order = new List<string>();
        var skippedPlatforms = new List<string>();
        foreach (var descriptor in index.Manifests)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (descriptor.Platform is not null && MediaTypes.IsManifest(descriptor.MediaType) && !Matches(descriptor.Platform, _options.Platform))
            {
                skippedPlatforms.Add(descriptor.Platform.ToString());
                continue;
            }

            if (!MediaTypes.IsManifest(descriptor.MediaType) && !MediaTypes.IsIndex(descriptor.MediaType))
            {
                continue; // artifacts and other content that is not an image
            }

            var image = await ResolveAsync(descriptor, NamesOf(descriptor), [], 0, cancellationToken).ConfigureAwait(false);
            if (byManifest.TryGetValue(image.ManifestDescriptor.Digest, out var existing))
            {
                byManifest[image.ManifestDescriptor.Digest] = existing with { Names = existing.Names.Union(image.Names).ToList() };
            }
            else
            {
                byManifest[image.ManifestDescriptor.Digest] = image;
                order.Add(image.ManifestDescriptor.Digest);
            }
        }

        if (order.Count == 0 && skippedPlatforms.Count > 0)
        {
            throw new ImageArchiveException(ArchiveProblem.PlatformNotFound, Path, null,
                $"no image for platform {_options.Platform}; the archive has {string.Join(", ", skippedPlatforms)}");
        }

        Images = order.Select(d => byManifest[d]).ToList();
    }

    private static List<string> NamesOf(OciDescriptor descriptor)
    {
        var names = new List<string>();
        if (descriptor.Annotations is { } a)
        {
            if (a.TryGetValue(ContainerdNameAnnotation, out var full) && !string.IsNullOrWhiteSpace(full))
            {
                names.Add(full);
            }
            else if (a.TryGetValue(RefNameAnnotation, out var refName) && !string.IsNullOrWhiteSpace(refName))
            {
                names.Add(refName);
            }
        }

        return names;
    }

    private async Task<ArchiveImage> ResolveAsync(OciDescriptor descriptor, List<string> names, List<OciDescriptor> indexes, int depth, CancellationToken cancellationToken)
    {
        if (depth > 8)
        {
            throw new ImageArchiveException(ArchiveProblem.InvalidFormat, Path, descriptor.Digest, "indexes nest more than 8 deep");
        }

        if (MediaTypes.IsIndex(descriptor.MediaType))
        {
            var data = await ReadJsonBlobAsync(descriptor, "index", cancellationToken).ConfigureAwait(false);
            var nested = ParseJson(data, $"index {descriptor.Digest}", descriptor.Digest, d => ImageJson.DeserializeIndex(d));
            var candidates = nested.Manifests.Where(m => MediaTypes.IsManifest(m.MediaType) || MediaTypes.IsIndex(m.MediaType)).ToList();
            var chosen = candidates.FirstOrDefault(m => m.Platform is not null && Matches(m.Platform, _options.Platform))
                ?? (candidates.Count == 1 && candidates[0].Platform is null ? candidates[0] : null);
            if (chosen is null)
            {
                var available = string.Join(", ", candidates.Select(m => m.Platform?.ToString() ?? "(no platform)"));
                throw new ImageArchiveException(ArchiveProblem.PlatformNotFound, Path, descriptor.Digest,
                    $"index {descriptor.Digest} has no manifest for platform {_options.Platform}; it has {available}");
            }

            if (names.Count == 0)
            {
                names = NamesOf(chosen);
            }

            return await ResolveAsync(chosen, names, [.. indexes, descriptor], depth + 1, cancellationToken).ConfigureAwait(false);
        }

        if (!MediaTypes.IsManifest(descriptor.MediaType))
        {
            throw new ImageArchiveException(ArchiveProblem.Unsupported, Path, descriptor.Digest,
                $"blob {descriptor.Digest} has media type {descriptor.MediaType}, which is neither an image index nor a manifest");
        }

        var manifestData = await ReadJsonBlobAsync(descriptor, "manifest", cancellationToken).ConfigureAwait(false);
        var manifest = ParseJson(manifestData, $"manifest {descriptor.Digest}", descriptor.Digest, d => ImageJson.DeserializeManifest(d));
        if (!MediaTypes.IsConfig(manifest.Config.MediaType))
        {
            throw new ImageArchiveException(ArchiveProblem.Unsupported, Path, manifest.Config.Digest,
                $"manifest {descriptor.Digest} has a config of media type {manifest.Config.MediaType}, which is not an image config");
        }

        var configData = await ReadJsonBlobAsync(manifest.Config, "config", cancellationToken).ConfigureAwait(false);
        var config = ParseJson(configData, $"image config {manifest.Config.Digest}", manifest.Config.Digest, d => ImageJson.DeserializeConfig(d));

        foreach (var layer in manifest.Layers)
        {
            if (!MediaTypes.IsLayer(layer.MediaType))
            {
                throw new ImageArchiveException(ArchiveProblem.Unsupported, Path, layer.Digest,
                    $"layer {layer.Digest} has unsupported media type {layer.MediaType}");
            }

            RegisterTarBlob(layer);
        }

        CheckDiffIds(descriptor.Digest, manifest, config);
        return new ArchiveImage
        {
            Names = names,
            ManifestDescriptor = descriptor with { Platform = descriptor.Platform ?? PlatformOf(config) },
            Manifest = manifest,
            Config = config,
            Indexes = indexes,
        };
    }

    private static OciPlatform PlatformOf(ImageConfig config)
        => new() { OS = config.Os ?? "unknown", Architecture = config.Architecture ?? "unknown", Variant = config.Variant };

    private List<string> DiffIdsOf(ImageConfig config, string configDigest)
        => config.Rootfs?.DiffIds
           ?? throw new ImageArchiveException(ArchiveProblem.InvalidFormat, Path, configDigest, $"image config {configDigest} has no rootfs.diff_ids");

    private void CheckDiffIds(string manifestDigest, OciManifest manifest, ImageConfig config)
    {
        var diffIds = DiffIdsOf(config, manifest.Config.Digest);
        if (diffIds.Count != manifest.Layers.Count)
        {
            throw new ImageArchiveException(ArchiveProblem.InvalidFormat, Path, manifestDigest,
                $"manifest {manifestDigest} has {manifest.Layers.Count} layers but its config lists {diffIds.Count} diff_ids");
        }

        foreach (var diffId in diffIds)
        {
            if (!OciDigest.IsValid(diffId))
            {
                throw new ImageArchiveException(ArchiveProblem.Unsupported, Path, manifest.Config.Digest, $"config diff_id '{diffId}' is not a sha256 digest");
            }
        }
    }

    /// <summary>Registers a blob stored under blobs/sha256/ after checking it is present with the descriptor's size.</summary>
    private TarBlob RegisterTarBlob(OciDescriptor descriptor)
    {
        if (!OciDigest.IsValid(descriptor.Digest))
        {
            throw new ImageArchiveException(ArchiveProblem.Unsupported, Path, descriptor.Digest,
                $"descriptor digest '{descriptor.Digest}' is not supported (only sha256)");
        }

        if (_blobs.TryGetValue(descriptor.Digest, out var known))
        {
            if (known.Size != descriptor.Size)
            {
                throw new ImageArchiveException(ArchiveProblem.SizeMismatch, Path, descriptor.Digest,
                    $"blob {descriptor.Digest} is described with sizes {known.Size} and {descriptor.Size}");
            }

            return (TarBlob)known;
        }

        var path = "blobs/sha256/" + OciDigest.Hex(descriptor.Digest);
        var item = FindFile(path)
            ?? throw new ImageArchiveException(ArchiveProblem.MissingBlob, Path, descriptor.Digest,
                $"blob {descriptor.Digest} ({descriptor.MediaType}) is missing: no {path} in the archive");
        if (item.Length != descriptor.Size)
        {
            var problem = item.Length < descriptor.Size ? ArchiveProblem.Truncated : ArchiveProblem.SizeMismatch;
            throw new ImageArchiveException(problem, Path, descriptor.Digest,
                $"blob {descriptor.Digest} ({descriptor.MediaType}) has {item.Length} bytes in the archive but its descriptor says {descriptor.Size}");
        }

        var blob = new TarBlob(item, descriptor.Size);
        _blobs[descriptor.Digest] = blob;
        return blob;
    }

    private async Task<byte[]> ReadJsonBlobAsync(OciDescriptor descriptor, string what, CancellationToken cancellationToken)
    {
        if (descriptor.Size > _options.MaxJsonBlobSize)
        {
            throw new ImageArchiveException(ArchiveProblem.Unsupported, Path, descriptor.Digest,
                $"{what} {descriptor.Digest} is {descriptor.Size} bytes, more than the {_options.MaxJsonBlobSize} allowed");
        }

        RegisterTarBlob(descriptor);
        return await ReadBlobAsync(descriptor.Digest, cancellationToken).ConfigureAwait(false);
    }

    private static bool Matches(OciPlatform have, OciPlatform want)
        => string.Equals(have.OS, want.OS, StringComparison.OrdinalIgnoreCase)
           && NormalizeArch(have.Architecture) == NormalizeArch(want.Architecture)
           && (want.Variant is null || have.Variant is null || string.Equals(have.Variant, want.Variant, StringComparison.OrdinalIgnoreCase));

    private static string NormalizeArch(string arch) => arch.ToLowerInvariant() switch
    {
        "x86_64" or "x86-64" => "amd64",
        "aarch64" => "arm64",
        var a => a,
    };

    // docker save -------------------------------------------------------

    private async Task LoadDockerSaveAsync(CancellationToken cancellationToken)
    {
        var data = await ReadEntryAsync(FindFile("manifest.json")!, cancellationToken).ConfigureAwait(false);
        var entries = ParseJson(data, "manifest.json", null, d => ImageJson.DeserializeDockerSave(d));
        var images = new List<ArchiveImage>();
        var layerCache = new Dictionary<string, OciDescriptor>(StringComparer.Ordinal);
        foreach (var entry in entries)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var configItem = FindFile(entry.Config)
                ?? throw new ImageArchiveException(ArchiveProblem.MissingBlob, Path, DigestFromDockerPath(entry.Config),
                    $"config {entry.Config} named by manifest.json is missing");
            var configData = await ReadEntryAsync(configItem, cancellationToken).ConfigureAwait(false);
            var configDigest = OciDigest.Compute(configData);
            CheckNamedDigest(entry.Config, configDigest, "config");
            var config = ParseJson(configData, $"config {entry.Config}", configDigest, d => ImageJson.DeserializeConfig(d));
            _blobs[configDigest] = new TarBlob(configItem, configData.Length);

            var diffIds = DiffIdsOf(config, configDigest);
            if (diffIds.Count != entry.Layers.Count)
            {
                throw new ImageArchiveException(ArchiveProblem.InvalidFormat, Path, configDigest,
                    $"manifest.json lists {entry.Layers.Count} layers but config {entry.Config} lists {diffIds.Count} diff_ids");
            }

            var layers = new List<OciDescriptor>();
            for (var i = 0; i < entry.Layers.Count; i++)
            {
                var layerPath = NormalizeName(entry.Layers[i]);
                if (!layerCache.TryGetValue(layerPath, out var layer))
                {
                    layer = await DescribeDockerLayerAsync(layerPath, diffIds[i], i, cancellationToken).ConfigureAwait(false);
                    layerCache[layerPath] = layer;
                }

                layers.Add(layer);
            }

            var manifest = new OciManifest
            {
                SchemaVersion = 2,
                MediaType = MediaTypes.OciManifest,
                Config = new OciDescriptor { MediaType = MediaTypes.OciConfig, Digest = configDigest, Size = configData.Length },
                Layers = layers,
            };
            var manifestData = ImageJson.Serialize(manifest);
            var manifestDigest = OciDigest.Compute(manifestData);
            _blobs[manifestDigest] = new MemoryBlob(manifestData);
            images.Add(new ArchiveImage
            {
                Names = entry.RepoTags ?? [],
                ManifestDescriptor = new OciDescriptor
                {
                    MediaType = MediaTypes.OciManifest,
                    Digest = manifestDigest,
                    Size = manifestData.Length,
                    Platform = PlatformOf(config),
                },
                Manifest = manifest,
                Config = config,
                Indexes = [],
            });
        }

        Images = images;
    }

    private async Task<OciDescriptor> DescribeDockerLayerAsync(string layerPath, string diffId, int position, CancellationToken cancellationToken)
    {
        var item = FindFile(layerPath)
            ?? throw new ImageArchiveException(ArchiveProblem.MissingBlob, Path, DigestFromDockerPath(layerPath) ?? diffId,
                $"layer {layerPath} (layer {position}, diff_id {diffId}) named by manifest.json is missing");

        var magic = new byte[4];
        string digest;
        await using (var stream = new FileSegmentStream(_tarPath, item.Offset, item.Length))
        {
            var got = await stream.ReadAtLeastAsync(magic, magic.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
            using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
            hash.AppendData(magic, 0, got);
            var buffer = new byte[1 << 16];
            long total = got;
            int n;
            while ((n = await stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
            {
                hash.AppendData(buffer, 0, n);
                total += n;
            }

            if (total != item.Length)
            {
                throw new ImageArchiveException(ArchiveProblem.Truncated, Path, diffId, $"layer {layerPath} is truncated: {total} of {item.Length} bytes");
            }

            digest = OciDigest.FromHash(hash.GetCurrentHash());
            Array.Resize(ref magic, got);
        }

        CheckNamedDigest(layerPath, digest, "layer");
        var compression = SniffCompression(magic);
        if (compression == LayerCompression.None && digest != diffId)
        {
            throw new ImageArchiveException(ArchiveProblem.DigestMismatch, Path, diffId,
                $"layer {layerPath} (layer {position}) is corrupt: it hashes to {digest} but the config's diff_id is {diffId}");
        }

        _blobs[digest] = new TarBlob(item, item.Length);
        return new OciDescriptor { MediaType = MediaTypes.OciLayerFor(compression), Digest = digest, Size = item.Length };
    }

    /// <summary>docker names configs &lt;hex&gt;.json and (since 25) layers blobs/sha256/&lt;hex&gt;: where the name is a digest, it must match.</summary>
    private void CheckNamedDigest(string path, string actual, string what)
    {
        var expected = DigestFromDockerPath(path);
        if (expected is not null && expected != actual)
        {
            throw new ImageArchiveException(ArchiveProblem.DigestMismatch, Path, expected,
                $"{what} {path} is corrupt: its content hashes to {actual}");
        }
    }

    private static string? DigestFromDockerPath(string path)
    {
        path = NormalizeName(path);
        var file = path[(path.LastIndexOf('/') + 1)..];
        if (file.EndsWith(".json", StringComparison.Ordinal))
        {
            file = file[..^5];
        }

        var candidate = "sha256:" + file;
        return OciDigest.IsValid(candidate) ? candidate : null;
    }

    // whole-archive compression ---------------------------------------

    internal static LayerCompression SniffCompression(ReadOnlySpan<byte> magic)
    {
        if (magic.Length >= 2 && magic[0] == 0x1f && magic[1] == 0x8b)
        {
            return LayerCompression.Gzip;
        }

        if (magic.Length >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd)
        {
            return LayerCompression.Zstd;
        }

        return LayerCompression.None;
    }

    private static async Task<LayerCompression> DetectCompressionAsync(string path, CancellationToken cancellationToken)
    {
        var magic = new byte[4];
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.Asynchronous);
        await using (stream.ConfigureAwait(false))
        {
            var n = await stream.ReadAtLeastAsync(magic, magic.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
            return SniffCompression(magic.AsSpan(0, n));
        }
    }

    private static async Task<string> DecompressToTempAsync(string path, LayerCompression compression, OciArchiveOptions options, CancellationToken cancellationToken)
    {
        var dir = options.TempDirectory ?? System.IO.Path.GetTempPath();
        Directory.CreateDirectory(dir);
        var temp = System.IO.Path.Combine(dir, $"kata-agent-archive-{Guid.NewGuid():N}.tar");
        try
        {
            var input = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous);
            await using (input.ConfigureAwait(false))
            {
                Stream decompressed = compression == LayerCompression.Gzip
                    ? new GZipStream(input, CompressionMode.Decompress, leaveOpen: true)
                    : new ZstdSharp.DecompressionStream(input, leaveOpen: true);
                await using (decompressed.ConfigureAwait(false))
                {
                    var output = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
                    await using (output.ConfigureAwait(false))
                    {
                        if (options.MaxDecompressedBytes is { } max)
                            await ExpansionLimit.CopyAsync(decompressed, output, max, $"the {compression}-compressed archive {path}", cancellationToken).ConfigureAwait(false);
                        else
                            await decompressed.CopyToAsync(output, cancellationToken).ConfigureAwait(false);
                    }
                }
            }

            return temp;
        }
        catch (Exception e) when (e is InvalidDataException or ZstdSharp.ZstdException or EndOfStreamException)
        {
            TryDelete(temp);
            throw new ImageArchiveException(ArchiveProblem.Truncated, path, null, $"the {compression}-compressed archive cannot be decompressed: {e.Message}", e);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    private static void TryDelete(string file)
    {
        try
        {
            File.Delete(file);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
