namespace KataAgent.Images;

// The docker-save reader: manifest.json entries turned into OCI manifests (layers hashed, configs checked against their names).
public sealed partial class OciArchive
{
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
        var stream = new FileSegmentStream(_tarPath, item.Offset, item.Length);
        await using (stream.ConfigureAwait(false))
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
}
