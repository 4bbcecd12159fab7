using System.Text.Json;
using KataAgent.Containerd;
using KataAgent.Oci;

namespace KataAgent.Images;

/// <summary>An image as containerd holds it.</summary>
/// <param name="Name">image record name</param>
/// <param name="Target">the record's target (a manifest, or an index)</param>
/// <param name="Manifest">descriptor of the platform manifest (the target itself unless it is an index)</param>
/// <param name="ConfigDescriptor">descriptor of the config blob</param>
/// <param name="Config">the image config (Env, Cmd, WorkingDir, Labels, ...)</param>
/// <param name="RecordLabels">labels on containerd's image record</param>
/// <param name="Layers">layer descriptors, bottom first</param>
/// <param name="ChainId">chain ID of the top layer: the committed snapshot a container's rootfs is prepared from</param>
/// <param name="Size">bytes in the content store: manifest, config and layers (compressed)</param>
/// <param name="Unpacked">whether the top snapshot exists on the snapshotter</param>
/// <param name="UnpackedSize">bytes of the unpacked snapshot chain, when unpacked</param>
public sealed record ImageDetails(
    string Name,
    OciDescriptor Target,
    OciDescriptor Manifest,
    OciDescriptor ConfigDescriptor,
    ImageConfig Config,
    IReadOnlyDictionary<string, string> RecordLabels,
    IReadOnlyList<OciDescriptor> Layers,
    string ChainId,
    long Size,
    bool Unpacked,
    long? UnpackedSize)
{
    /// <summary>The image config's labels (ai.backend.* and the like).</summary>
    public IReadOnlyDictionary<string, string> Labels => Config.Labels;

    public IReadOnlyList<string> DiffIds => Config.Rootfs?.DiffIds ?? [];
}

/// <summary>Reads an image's manifest, config and snapshot state from containerd.</summary>
public sealed class ImageInspector(ContainerdClient client)
{
    private const int MaxJsonBlob = 16 * 1024 * 1024;

    /// <summary>Inspects an image; throws <see cref="ContainerdNotFoundException"/> when there is no such image.</summary>
    public async Task<ImageDetails> InspectAsync(string name, string snapshotter = "overlayfs", OciPlatform? platform = null, CancellationToken cancellationToken = default)
    {
        var record = await client.Images.GetAsync(name, cancellationToken).ConfigureAwait(false);
        var target = new OciDescriptor { MediaType = record.Target.MediaType, Digest = record.Target.Digest, Size = record.Target.Size };
        var (manifestDescriptor, manifest, indexSize) = await ResolveManifestAsync(name, target, platform ?? OciPlatform.Host, cancellationToken).ConfigureAwait(false);
        var configBytes = await ReadJsonBlobAsync(name, manifest.Config, cancellationToken).ConfigureAwait(false);
        ImageConfig config;
        try
        {
            config = ImageConfig.Parse(configBytes);
        }
        catch (Exception e) when (e is JsonException or InvalidSpecException)
        {
            throw new ImageImportException($"image {name}: config {manifest.Config.Digest} is not a valid image config: {e.Message}", e);
        }

        var diffIds = config.Rootfs?.DiffIds ?? [];
        if (diffIds.Count != manifest.Layers.Count || diffIds.Count == 0)
        {
            throw new ImageImportException($"image {name}: manifest {manifestDescriptor.Digest} has {manifest.Layers.Count} layers but config {manifest.Config.Digest} lists {diffIds.Count} diff_ids");
        }

        var chain = Images.ChainId.Compute(diffIds);
        var unpacked = await client.Snapshots.FindAsync(chain[^1], snapshotter, cancellationToken).ConfigureAwait(false) is not null;
        long? unpackedSize = null;
        if (unpacked)
        {
            long total = 0;
            foreach (var chainId in chain)
            {
                total += (await client.Snapshots.UsageAsync(chainId, snapshotter, cancellationToken).ConfigureAwait(false)).Size;
            }

            unpackedSize = total;
        }

        var size = indexSize + manifestDescriptor.Size + manifest.Config.Size + manifest.Layers.DistinctBy(l => l.Digest).Sum(l => l.Size);
        return new ImageDetails(name, target, manifestDescriptor, manifest.Config, config, new Dictionary<string, string>(record.Labels),
            manifest.Layers, chain[^1], size, unpacked, unpackedSize);
    }

    /// <summary>Like <see cref="InspectAsync"/>, but null when there is no such image.</summary>
    public async Task<ImageDetails?> FindAsync(string name, string snapshotter = "overlayfs", OciPlatform? platform = null, CancellationToken cancellationToken = default)
    {
        if (await client.Images.FindAsync(name, cancellationToken).ConfigureAwait(false) is null)
        {
            return null;
        }

        return await InspectAsync(name, snapshotter, platform, cancellationToken).ConfigureAwait(false);
    }

    private async Task<(OciDescriptor Descriptor, OciManifest Manifest, long IndexSize)> ResolveManifestAsync(
        string name, OciDescriptor target, OciPlatform platform, CancellationToken cancellationToken)
    {
        long indexSize = 0;
        var current = target;
        for (var depth = 0; depth < 8; depth++)
        {
            var data = await ReadJsonBlobAsync(name, current, cancellationToken).ConfigureAwait(false);
            try
            {
                if (MediaTypes.IsManifest(current.MediaType))
                {
                    return (current, ImageJson.DeserializeManifest(data), indexSize);
                }

                if (!MediaTypes.IsIndex(current.MediaType))
                {
                    throw new ImageImportException($"image {name}: {current.Digest} has media type {current.MediaType}, neither a manifest nor an index");
                }

                indexSize += current.Size;
                var index = ImageJson.DeserializeIndex(data);
                current = index.Manifests.FirstOrDefault(m => m.Platform is { } p && p.OS == platform.OS && p.Architecture == platform.Architecture)
                    ?? throw new ImageImportException($"image {name}: index {current.Digest} has no manifest for {platform}");
            }
            catch (JsonException e)
            {
                throw new ImageImportException($"image {name}: {current.Digest} is not valid JSON: {e.Message}", e);
            }
        }

        throw new ImageImportException($"image {name}: indexes nest too deep");
    }

    private async Task<byte[]> ReadJsonBlobAsync(string name, OciDescriptor descriptor, CancellationToken cancellationToken)
    {
        if (descriptor.Size > MaxJsonBlob)
        {
            throw new ImageImportException($"image {name}: blob {descriptor.Digest} is {descriptor.Size} bytes, too large for a manifest or config");
        }

        byte[] data;
        try
        {
            data = await client.Content.ReadAllAsync(descriptor.Digest, cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException e)
        {
            throw new ImageImportException($"image {name}: blob {descriptor.Digest} ({descriptor.MediaType}) is missing from the content store", e);
        }

        if (OciDigest.Compute(data) != descriptor.Digest)
        {
            throw new ImageImportException($"image {name}: blob {descriptor.Digest} in the content store does not match its digest");
        }

        return data;
    }
}
