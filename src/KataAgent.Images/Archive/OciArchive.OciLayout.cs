using KataAgent.Oci;

namespace KataAgent.Images;

// The OCI image layout reader: index.json, nested indexes resolved to one platform, manifests, configs and layers.
public sealed partial class OciArchive
{
    private const string RefNameAnnotation = "org.opencontainers.image.ref.name";
    private const string ContainerdNameAnnotation = "io.containerd.image.name";

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
}
