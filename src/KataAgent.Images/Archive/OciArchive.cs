using System.Text.Json;
using KataAgent.Oci;

namespace KataAgent.Images;

/// <summary>
/// Reads an image archive: an OCI image layout tar or a <c>docker save</c> tar (optionally gzip/zstd-compressed as a whole).
/// Opening indexes the tar, resolves every image to one platform manifest, and checks that every blob the images need is
/// present with the size its descriptor states; manifests, indexes and configs are read and digest-checked at open.
/// Layer blobs are digest-checked while streamed through <see cref="OpenBlob(OciDescriptor)"/> (or all at once with
/// <see cref="VerifyAsync"/>). Every problem raises <see cref="ImageArchiveException"/> naming the archive and blob.
/// </summary>
public sealed partial class OciArchive : IAsyncDisposable, IDisposable
{
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

        var stream = OpenBlob(digest);
        await using var streamDisposal = stream.ConfigureAwait(false);
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
            var stream = OpenBlob(digest);
            await using var streamDisposal = stream.ConfigureAwait(false);
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

    private abstract record BlobSource(long Size);

    private sealed record TarBlob(TarItem Item, long Size) : BlobSource(Size);

    private sealed record MemoryBlob(byte[] Data) : BlobSource(Data.Length);

    private BlobSource Source(string digest)
        => _blobs.TryGetValue(digest, out var source)
            ? source
            : throw new ImageArchiveException(ArchiveProblem.MissingBlob, Path, digest, $"blob {digest} is not part of any image in the archive");

    // ---------------------------------------------------------------- formats (each reader in its own file)

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

    // shared by both readers

    private static OciPlatform PlatformOf(ImageConfig config)
        => new() { OS = config.Os ?? "unknown", Architecture = config.Architecture ?? "unknown", Variant = config.Variant };

    private List<string> DiffIdsOf(ImageConfig config, string configDigest)
        => config.Rootfs?.DiffIds
           ?? throw new ImageArchiveException(ArchiveProblem.InvalidFormat, Path, configDigest, $"image config {configDigest} has no rootfs.diff_ids");

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
