using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using KataAgent.Oci;

namespace KataAgent.Images.Tests;

/// <summary>A temporary directory removed (with anything mounted inside) on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir(string? parent = null)
    {
        Path = System.IO.Path.Combine(parent ?? System.IO.Path.GetTempPath(), "kai-test-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => NativeFs.DeleteTree(Path);
}

/// <summary>Builds small layers and image archives (good and broken) for the reader tests.</summary>
public static class TestImages
{
    public sealed record Layer(byte[] Blob, string Digest, string DiffId, string MediaType, byte[] Tar);

    /// <summary>An uncompressed layer tar holding the given files, then compressed as asked.</summary>
    public static Layer MakeLayer(LayerCompression compression, params (string Name, string Content)[] files)
    {
        var tar = new MemoryStream();
        using (var writer = new TarWriter(tar, TarEntryFormat.Pax, leaveOpen: true))
        {
            foreach (var (name, content) in files)
            {
                var entry = new PaxTarEntry(TarEntryType.RegularFile, name)
                {
                    ModificationTime = DateTimeOffset.FromUnixTimeSeconds(1_700_000_000),
                    Mode = (UnixFileMode)0b110_100_100,
                    DataStream = new MemoryStream(Encoding.UTF8.GetBytes(content)),
                };
                writer.WriteEntry(entry);
            }
        }

        var tarBytes = tar.ToArray();
        var blob = compression switch
        {
            LayerCompression.None => tarBytes,
            LayerCompression.Gzip => Gzip(tarBytes),
            LayerCompression.Zstd => new ZstdSharp.Compressor(3).Wrap(tarBytes).ToArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(compression)),
        };
        return new Layer(blob, OciDigest.Compute(blob), OciDigest.Compute(tarBytes), MediaTypes.OciLayerFor(compression), tarBytes);
    }

    public static byte[] Gzip(byte[] data)
    {
        var output = new MemoryStream();
        using (var gzip = new GZipStream(output, CompressionLevel.Fastest, leaveOpen: true))
        {
            gzip.Write(data);
        }

        return output.ToArray();
    }

    public static byte[] ConfigJson(IEnumerable<string> diffIds, string arch = "amd64", IDictionary<string, string>? labels = null)
    {
        var config = new ImageConfig
        {
            Architecture = arch,
            Os = "linux",
            Config = new ImageRuntimeConfig
            {
                Env = ["PATH=/usr/bin:/bin"],
                Cmd = ["/bin/sh"],
                Labels = labels is null ? null : new Dictionary<string, string>(labels),
            },
            Rootfs = new ImageRootfs { DiffIds = diffIds.ToList() },
        };
        return Encoding.UTF8.GetBytes(config.ToJson());
    }

    public static OciDescriptor Describe(byte[] data, string mediaType, OciPlatform? platform = null, IReadOnlyDictionary<string, string>? annotations = null)
        => new() { MediaType = mediaType, Digest = OciDigest.Compute(data), Size = data.Length, Platform = platform, Annotations = annotations };

    /// <summary>An OCI layout in the making: blobs by digest plus index.json, any of which a test may break before writing.</summary>
    public sealed class Layout
    {
        public Dictionary<string, byte[]> Blobs { get; } = [];

        public List<OciDescriptor> IndexManifests { get; } = [];

        public string Add(byte[] data)
        {
            var digest = OciDigest.Compute(data);
            Blobs[digest] = data;
            return digest;
        }

        /// <summary>Adds config, layers and manifest; returns the manifest's descriptor (not yet in index.json).</summary>
        public (OciDescriptor Manifest, byte[] Config) AddImage(IReadOnlyList<Layer> layers, string arch = "amd64", IDictionary<string, string>? labels = null)
        {
            var config = ConfigJson(layers.Select(l => l.DiffId), arch, labels);
            Add(config);
            foreach (var layer in layers)
            {
                Add(layer.Blob);
            }

            var manifest = new OciManifest
            {
                MediaType = MediaTypes.OciManifest,
                Config = Describe(config, MediaTypes.OciConfig),
                Layers = layers.Select(l => new OciDescriptor { MediaType = l.MediaType, Digest = l.Digest, Size = l.Blob.Length }).ToList(),
            };
            var manifestBytes = ImageJson.Serialize(manifest);
            Add(manifestBytes);
            return (Describe(manifestBytes, MediaTypes.OciManifest, new OciPlatform { OS = "linux", Architecture = arch }), config);
        }

        public void Write(string path, Func<string, byte[], byte[]?>? blobFilter = null, bool blobsLast = false)
        {
            var entries = new List<(string, byte[])>
            {
                ("oci-layout", Encoding.UTF8.GetBytes("{\"imageLayoutVersion\":\"1.0.0\"}")),
                ("index.json", ImageJson.Serialize(new OciIndex { MediaType = MediaTypes.OciIndex, Manifests = IndexManifests })),
            };
            var blobs = new List<(string, byte[])>();
            foreach (var (digest, data) in Blobs)
            {
                var kept = blobFilter is null ? data : blobFilter(digest, data);
                if (kept is not null)
                {
                    blobs.Add(("blobs/sha256/" + OciDigest.Hex(digest), kept));
                }
            }

            WriteTar(path, blobsLast ? entries.Concat(blobs) : blobs.Concat(entries));
        }
    }

    public static void WriteTar(string path, IEnumerable<(string Name, byte[] Data)> files, IEnumerable<(string Name, string Target)>? symlinks = null)
    {
        using var file = System.IO.File.Create(path);
        using var writer = new TarWriter(file, TarEntryFormat.Pax);
        foreach (var (name, data) in files)
        {
            writer.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, name) { DataStream = new MemoryStream(data) });
        }

        foreach (var (name, target) in symlinks ?? [])
        {
            writer.WriteEntry(new PaxTarEntry(TarEntryType.SymbolicLink, name) { LinkName = target });
        }
    }

    public static async Task<byte[]> ReadAllAsync(Stream stream)
    {
        var buffer = new MemoryStream();
        await stream.CopyToAsync(buffer);
        return buffer.ToArray();
    }

    /// <summary>Entries of a (possibly gzip'ed) layer tar, in order.</summary>
    public static async Task<List<(TarEntry Entry, byte[]? Data)>> ReadLayerAsync(Stream blob, LayerCompression compression)
    {
        Stream tar = compression switch
        {
            LayerCompression.Gzip => new GZipStream(blob, CompressionMode.Decompress),
            LayerCompression.Zstd => new ZstdSharp.DecompressionStream(blob),
            _ => blob,
        };
        var result = new List<(TarEntry, byte[]?)>();
        await using var reader = new TarReader(tar);
        while (await reader.GetNextEntryAsync(copyData: false) is { } entry)
        {
            result.Add((entry, entry.DataStream is null ? null : await ReadAllAsync(entry.DataStream)));
        }

        return result;
    }
}
