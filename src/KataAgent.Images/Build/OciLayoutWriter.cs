using System.Formats.Tar;
using KataAgent.Oci;

namespace KataAgent.Images;

/// <summary>A layer blob on disk, ready to go into an image.</summary>
/// <param name="Descriptor">media type, digest and size of the blob file</param>
/// <param name="DiffId">digest of the uncompressed layer tar</param>
/// <param name="FilePath">the blob's file</param>
public sealed record LayerBlob(OciDescriptor Descriptor, string DiffId, string FilePath)
{
    public static LayerBlob FromInfo(LayerInfo info, string filePath) => new(info.Descriptor, info.DiffId, filePath);
}

/// <summary>What <see cref="OciLayoutWriter.WriteAsync"/> wrote.</summary>
public sealed record OciLayoutResult(OciDescriptor Manifest, OciDescriptor Config, IReadOnlyList<OciDescriptor> Layers);

/// <summary>
/// Writes a single-image OCI image layout as a tar: <c>oci-layout</c>, <c>index.json</c> (one manifest, named by
/// <c>org.opencontainers.image.ref.name</c> and <c>io.containerd.image.name</c>) and <c>blobs/sha256/*</c>.
/// Output is reproducible: fixed entry order, owner 0:0, mode 0644/0755, mtime 0.
/// </summary>
public static class OciLayoutWriter
{
    public const string RefNameAnnotation = "org.opencontainers.image.ref.name";
    public const string ContainerdNameAnnotation = "io.containerd.image.name";

    /// <param name="config">the image config; the archive gets a copy whose <c>rootfs.diff_ids</c> are the layers' diff ids</param>
    /// <param name="imageName">the name put on index.json's manifest entry (null: unnamed)</param>
    public static async Task<OciLayoutResult> WriteAsync(
        Stream output,
        ImageConfig config,
        IReadOnlyList<LayerBlob> layers,
        string? imageName,
        IReadOnlyDictionary<string, string>? manifestAnnotations = null,
        CancellationToken cancellationToken = default)
    {
        config = ImageConfig.Parse(config.ToJson());
        config.Rootfs = new ImageRootfs { DiffIds = layers.Select(l => l.DiffId).ToList() };
        var configData = ImageJson.Serialize(config);
        var configDescriptor = new OciDescriptor { MediaType = MediaTypes.OciConfig, Digest = OciDigest.Compute(configData), Size = configData.Length };
        var manifest = new OciManifest
        {
            SchemaVersion = 2,
            MediaType = MediaTypes.OciManifest,
            Config = configDescriptor,
            Layers = layers.Select(l => l.Descriptor with { Annotations = null, Platform = null }).ToList(),
            Annotations = manifestAnnotations is { Count: > 0 } ? manifestAnnotations : null,
        };
        var manifestData = ImageJson.Serialize(manifest);
        var manifestDescriptor = new OciDescriptor
        {
            MediaType = MediaTypes.OciManifest,
            Digest = OciDigest.Compute(manifestData),
            Size = manifestData.Length,
            Platform = new OciPlatform { OS = config.Os ?? "linux", Architecture = config.Architecture ?? OciPlatform.Host.Architecture, Variant = config.Variant },
        };
        var index = new OciIndex
        {
            SchemaVersion = 2,
            MediaType = MediaTypes.OciIndex,
            Manifests =
            [
                manifestDescriptor with
                {
                    Annotations = imageName is null
                        ? null
                        : new Dictionary<string, string> { [RefNameAnnotation] = imageName, [ContainerdNameAnnotation] = imageName },
                },
            ],
        };

        var writer = new TarWriter(output, TarEntryFormat.Pax, leaveOpen: true);
        await using (writer.ConfigureAwait(false))
        {
            await WriteBytesAsync(writer, "oci-layout", ImageJson.Serialize(new OciLayoutMarker { ImageLayoutVersion = "1.0.0" }), cancellationToken).ConfigureAwait(false);
            await WriteBytesAsync(writer, "index.json", ImageJson.Serialize(index), cancellationToken).ConfigureAwait(false);
            await WriteDirectoryAsync(writer, "blobs/", cancellationToken).ConfigureAwait(false);
            await WriteDirectoryAsync(writer, "blobs/sha256/", cancellationToken).ConfigureAwait(false);
            await WriteBytesAsync(writer, BlobPath(manifestDescriptor.Digest), manifestData, cancellationToken).ConfigureAwait(false);
            await WriteBytesAsync(writer, BlobPath(configDescriptor.Digest), configData, cancellationToken).ConfigureAwait(false);
            foreach (var layer in layers.DistinctBy(l => l.Descriptor.Digest))
            {
                var length = new FileInfo(layer.FilePath).Length;
                if (length != layer.Descriptor.Size)
                {
                    throw new InvalidOperationException($"layer file {layer.FilePath} has {length} bytes but its descriptor says {layer.Descriptor.Size}");
                }

                var data = new FileStream(layer.FilePath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
                await using (data.ConfigureAwait(false))
                {
                    var entry = NewEntry(TarEntryType.RegularFile, BlobPath(layer.Descriptor.Digest), 0b110_100_100);
                    entry.DataStream = data;
                    await writer.WriteEntryAsync(entry, cancellationToken).ConfigureAwait(false);
                }
            }
        }

        return new OciLayoutResult(manifestDescriptor, configDescriptor, manifest.Layers);
    }

    /// <summary>Writes the layout tar to <paramref name="path"/> through a temporary file renamed into place, so the path either holds a complete archive or nothing new.</summary>
    public static async Task<OciLayoutResult> WriteFileAsync(
        string path,
        ImageConfig config,
        IReadOnlyList<LayerBlob> layers,
        string? imageName,
        IReadOnlyDictionary<string, string>? manifestAnnotations = null,
        CancellationToken cancellationToken = default)
    {
        var temp = path + $".{Guid.NewGuid():N}.tmp";
        try
        {
            OciLayoutResult result;
            var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
            await using (file.ConfigureAwait(false))
            {
                result = await WriteAsync(file, config, layers, imageName, manifestAnnotations, cancellationToken).ConfigureAwait(false);
                await file.FlushAsync(cancellationToken).ConfigureAwait(false);
            }

            File.Move(temp, path, overwrite: true);
            return result;
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    public static string BlobPath(string digest) => "blobs/sha256/" + OciDigest.Hex(digest);

    private static PaxTarEntry NewEntry(TarEntryType type, string name, int mode) => new(type, name)
    {
        ModificationTime = DateTimeOffset.UnixEpoch,
        Mode = (UnixFileMode)mode,
        Uid = 0,
        Gid = 0,
    };

    private static Task WriteDirectoryAsync(TarWriter writer, string name, CancellationToken cancellationToken)
        => writer.WriteEntryAsync(NewEntry(TarEntryType.Directory, name, 0b111_101_101), cancellationToken);

    private static async Task WriteBytesAsync(TarWriter writer, string name, byte[] data, CancellationToken cancellationToken)
    {
        var entry = NewEntry(TarEntryType.RegularFile, name, 0b110_100_100);
        entry.DataStream = new MemoryStream(data, writable: false);
        await writer.WriteEntryAsync(entry, cancellationToken).ConfigureAwait(false);
    }
}
