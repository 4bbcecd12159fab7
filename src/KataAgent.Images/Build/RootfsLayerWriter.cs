using System.Formats.Tar;
using System.IO.Compression;

namespace KataAgent.Images;

/// <summary>Options for <see cref="RootfsLayerWriter"/>.</summary>
public sealed record LayerWriterOptions
{
    public LayerCompression Compression { get; init; } = LayerCompression.Gzip;

    /// <summary>Modification times later than this are written as this (like SOURCE_DATE_EPOCH); null keeps them.</summary>
    public DateTimeOffset? ClampModificationTime { get; init; }

    /// <summary>Write character and block device nodes. Off by default: container runtimes mount their own /dev.</summary>
    public bool IncludeDeviceNodes { get; init; }

    /// <summary>Gzip level; zstd uses level 3 unless <see cref="ZstdLevel"/> says otherwise.</summary>
    public CompressionLevel GzipLevel { get; init; } = CompressionLevel.Optimal;

    public int ZstdLevel { get; init; } = 3;

    /// <summary>Write every entry with this owner instead of the files' own (for trees built by an unprivileged user).</summary>
    public (int Uid, int Gid)? Owner { get; init; }
}

/// <summary>Digests and sizes of a written layer.</summary>
/// <param name="Descriptor">media type, digest and size of the (compressed) blob</param>
/// <param name="DiffId">digest of the uncompressed tar</param>
/// <param name="UncompressedSize">bytes of the uncompressed tar</param>
/// <param name="EntryCount">tar entries written</param>
public sealed record LayerInfo(OciDescriptor Descriptor, string DiffId, long UncompressedSize, int EntryCount);

/// <summary>
/// Packs a directory tree into an OCI layer tar (PAX), reproducibly: entries in ordinal path order (a directory before its
/// contents), numeric owners without user names, modes including setuid/setgid/sticky, whole-second mtimes and no
/// access/change times, symlinks as links, repeated inodes as hard links to the first path seen. Sockets are skipped,
/// device nodes unless asked for, and other file systems mounted inside the tree are not descended into.
/// The same tree therefore always gives the same digest. Extended attributes are not carried.
/// </summary>
public static class RootfsLayerWriter
{
    /// <summary>Writes the layer for <paramref name="rootDirectory"/> to <paramref name="output"/> (left open).</summary>
    public static async Task<LayerInfo> WriteAsync(string rootDirectory, Stream output, LayerWriterOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new LayerWriterOptions();
        var root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(rootDirectory));
        var rootStat = NativeFs.LStat(root);
        if (rootStat.Type != UnixStat.Directory)
        {
            throw new DirectoryNotFoundException($"layer root {root} is not a directory");
        }

        var compressed = new HashingWriteStream(output, leaveOpen: true);
        int count;
        long uncompressedSize;
        string diffId;
        await using (compressed.ConfigureAwait(false))
        {
            var compressor = OpenCompressor(compressed, options);
            var tarBytes = new HashingWriteStream(compressor, leaveOpen: true);
            await using (tarBytes.ConfigureAwait(false))
            {
                var writer = new TarWriter(tarBytes, TarEntryFormat.Pax, leaveOpen: true);
                await using (writer.ConfigureAwait(false))
                {
                    var state = new WalkState(root, rootStat, writer, options);
                    await WriteChildrenAsync(state, root, "", cancellationToken).ConfigureAwait(false);
                    count = state.Count;
                }

                await tarBytes.FlushAsync(cancellationToken).ConfigureAwait(false);
                uncompressedSize = tarBytes.BytesWritten;
                diffId = tarBytes.Digest;
            }

            if (!ReferenceEquals(compressor, compressed))
            {
                await compressor.DisposeAsync().ConfigureAwait(false); // writes the compression trailer
            }

            await compressed.FlushAsync(cancellationToken).ConfigureAwait(false);
            var descriptor = new OciDescriptor
            {
                MediaType = MediaTypes.OciLayerFor(options.Compression),
                Digest = compressed.Digest,
                Size = compressed.BytesWritten,
            };
            return new LayerInfo(descriptor, diffId, uncompressedSize, count);
        }
    }

    /// <summary>Writes the layer for <paramref name="rootDirectory"/> to a new file.</summary>
    public static async Task<LayerInfo> WriteFileAsync(string rootDirectory, string outputFile, LayerWriterOptions? options = null, CancellationToken cancellationToken = default)
    {
        var file = new FileStream(outputFile, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
        try
        {
            LayerInfo info;
            await using (file.ConfigureAwait(false))
            {
                info = await WriteAsync(rootDirectory, file, options, cancellationToken).ConfigureAwait(false);
            }

            return info;
        }
        catch
        {
            File.Delete(outputFile);
            throw;
        }
    }

    private static Stream OpenCompressor(Stream target, LayerWriterOptions options) => options.Compression switch
    {
        LayerCompression.None => target,
        LayerCompression.Gzip => new GZipStream(target, options.GzipLevel, leaveOpen: true),
        LayerCompression.Zstd => new ZstdSharp.CompressionStream(target, options.ZstdLevel, leaveOpen: true),
        _ => throw new ArgumentOutOfRangeException(nameof(options), options.Compression, "unknown compression"),
    };

    private sealed class WalkState(string root, UnixStat rootStat, TarWriter writer, LayerWriterOptions options)
    {
        public string Root { get; } = root;
        public UnixStat RootStat { get; } = rootStat;
        public TarWriter Writer { get; } = writer;
        public LayerWriterOptions Options { get; } = options;
        public Dictionary<(uint, uint, ulong), string> HardLinks { get; } = [];
        public int Count { get; set; }
    }

    private static async Task WriteChildrenAsync(WalkState state, string directory, string prefix, CancellationToken cancellationToken)
    {
        var children = Directory.EnumerateFileSystemEntries(directory)
            .Select(Path.GetFileName)
            .OfType<string>()
            .Order(StringComparer.Ordinal)
            .ToList();
        foreach (var name in children)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var fullPath = Path.Combine(directory, name);
            var entryName = prefix + name;
            var stat = NativeFs.LStat(fullPath);
            var descend = await WriteEntryAsync(state, fullPath, entryName, stat, cancellationToken).ConfigureAwait(false);
            if (descend)
            {
                await WriteChildrenAsync(state, fullPath, entryName + "/", cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <returns>true when the entry is a directory to descend into</returns>
    private static async Task<bool> WriteEntryAsync(WalkState state, string fullPath, string entryName, UnixStat stat, CancellationToken cancellationToken)
    {
        PaxTarEntry entry;
        var descend = false;
        Stream? data = null;
        switch (stat.Type)
        {
            case UnixStat.Directory:
                entry = new PaxTarEntry(TarEntryType.Directory, entryName + "/");
                // another file system mounted here (proc, sys, a bind mount): keep the mount point, not its contents
                descend = stat.DevMajor == state.RootStat.DevMajor && stat.DevMinor == state.RootStat.DevMinor;
                break;
            case UnixStat.Regular when stat.NLink > 1 && state.HardLinks.TryGetValue(stat.FileId, out var first):
                entry = new PaxTarEntry(TarEntryType.HardLink, entryName) { LinkName = first };
                break;
            case UnixStat.Regular:
                if (stat.NLink > 1)
                {
                    state.HardLinks[stat.FileId] = entryName;
                }

                entry = new PaxTarEntry(TarEntryType.RegularFile, entryName);
#pragma warning disable CA2000 // disposed in the finally below, whose try begins right after this switch
                data = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
#pragma warning restore CA2000
                break;
            case UnixStat.Symlink:
                var target = new FileInfo(fullPath).LinkTarget
                    ?? throw new IOException($"cannot read symlink {fullPath}");
                entry = new PaxTarEntry(TarEntryType.SymbolicLink, entryName) { LinkName = target };
                break;
            case UnixStat.Fifo:
                entry = new PaxTarEntry(TarEntryType.Fifo, entryName);
                break;
            case UnixStat.Char or UnixStat.Block when state.Options.IncludeDeviceNodes:
                entry = new PaxTarEntry(stat.Type == UnixStat.Char ? TarEntryType.CharacterDevice : TarEntryType.BlockDevice, entryName)
                {
                    DeviceMajor = (int)stat.RdevMajor,
                    DeviceMinor = (int)stat.RdevMinor,
                };
                break;
            default:
                return false; // sockets; device nodes unless asked for
        }

        // From here on the data stream (if any) is ours to close, whatever throws.
        try
        {
            var mtime = DateTimeOffset.FromUnixTimeSeconds(stat.MtimeSeconds);
            if (state.Options.ClampModificationTime is { } clamp && mtime > clamp)
            {
                mtime = DateTimeOffset.FromUnixTimeSeconds(clamp.ToUnixTimeSeconds());
            }

            entry.ModificationTime = mtime;
            entry.Mode = (UnixFileMode)stat.Permissions;
            entry.Uid = state.Options.Owner?.Uid ?? (int)stat.Uid;
            entry.Gid = state.Options.Owner?.Gid ?? (int)stat.Gid;
            if (data is not null)
            {
                entry.DataStream = data;
            }

            await state.Writer.WriteEntryAsync(entry, cancellationToken).ConfigureAwait(false);
            state.Count++;
        }
        finally
        {
            if (data is not null)
            {
                await data.DisposeAsync().ConfigureAwait(false);
            }
        }

        return descend;
    }
}
