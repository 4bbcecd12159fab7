using System.Text;

namespace KataAgent.Images.Tests;

public sealed class OciArchiveTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static TestImages.Layer[] ThreeLayers() =>
    [
        TestImages.MakeLayer(LayerCompression.None, ("a.txt", "plain")),
        TestImages.MakeLayer(LayerCompression.Gzip, ("b.txt", "gzip")),
        TestImages.MakeLayer(LayerCompression.Zstd, ("c.txt", "zstd")),
    ];

    private static Dictionary<string, string> Named(string name) => new() { ["org.opencontainers.image.ref.name"] = name };

    [Fact]
    public async Task OciLayout_WithUncompressedGzipAndZstdLayers_IsReadAndEveryBlobStreamsVerified()
    {
        var layers = ThreeLayers();
        var layout = new TestImages.Layout();
        var (manifest, config) = layout.AddImage(layers, labels: new Dictionary<string, string> { ["ai.backend.kernelspec"] = "1" });
        layout.IndexManifests.Add(manifest with { Annotations = Named("example.com/test:1") });
        var path = _dir.File("image.tar");
        layout.Write(path);

        await using var archive = await OciArchive.OpenAsync(path);

        Assert.Equal(ImageArchiveFormat.OciLayout, archive.Format);
        var image = Assert.Single(archive.Images);
        Assert.Equal("example.com/test:1", image.Name);
        Assert.Equal(manifest.Digest, image.ManifestDescriptor.Digest);
        Assert.Equal(OciDigest.Compute(config), image.ConfigDescriptor.Digest);
        Assert.Equal([MediaTypes.OciLayer, MediaTypes.OciLayerGzip, MediaTypes.OciLayerZstd], image.Layers.Select(l => l.MediaType));
        Assert.Equal(layers.Select(l => l.DiffId), image.DiffIds);
        Assert.Equal("1", image.Config.Labels["ai.backend.kernelspec"]);
        Assert.Equal(5, image.Blobs().Count());
        foreach (var layer in layers)
        {
            await using var stream = archive.OpenBlob(image.Layers.Single(l => l.Digest == layer.Digest));
            Assert.Equal(layer.Blob, await TestImages.ReadAllAsync(stream));
        }

        await archive.VerifyAsync();
    }

    [Fact]
    public async Task OciLayout_LayersDecompressToTheirDiffIds()
    {
        var layers = ThreeLayers();
        var layout = new TestImages.Layout();
        layout.IndexManifests.Add(layout.AddImage(layers).Manifest);
        var path = _dir.File("image.tar");
        layout.Write(path);

        await using var archive = await OciArchive.OpenAsync(path);
        var image = archive.SingleImage;
        Assert.Null(image.Name);
        for (var i = 0; i < layers.Length; i++)
        {
            Assert.True(MediaTypes.TryGetLayerCompression(image.Layers[i].MediaType, out var compression));
            await using var blob = archive.OpenBlob(image.Layers[i]);
            var entries = await TestImages.ReadLayerAsync(blob, compression);
            Assert.Single(entries);
            Assert.Equal(layers[i].Tar.Length > 0, entries[0].Data!.Length > 0);
        }
    }

    [Fact]
    public async Task NestedIndex_PicksTheHostPlatformManifest()
    {
        var layout = new TestImages.Layout();
        var amd = layout.AddImage([TestImages.MakeLayer(LayerCompression.Gzip, ("arch", "amd64"))], "amd64").Manifest;
        var arm = layout.AddImage([TestImages.MakeLayer(LayerCompression.Gzip, ("arch", "arm64"))], "arm64").Manifest;
        var nested = ImageJson.Serialize(new OciIndex { MediaType = MediaTypes.OciIndex, Manifests = [arm, amd] });
        layout.Add(nested);
        layout.IndexManifests.Add(TestImages.Describe(nested, MediaTypes.OciIndex, annotations: Named("multi:latest")));
        var path = _dir.File("multi.tar");
        layout.Write(path);

        await using var archive = await OciArchive.OpenAsync(path, new OciArchiveOptions { Platform = OciPlatform.LinuxAmd64 });
        var image = archive.SingleImage;
        Assert.Equal(amd.Digest, image.ManifestDescriptor.Digest);
        Assert.Equal("multi:latest", image.Name);
        Assert.Equal("amd64", image.Config.Architecture);
        Assert.Equal(OciDigest.Compute(nested), Assert.Single(image.Indexes).Digest);

        await using var armArchive = await OciArchive.OpenAsync(path, new OciArchiveOptions { Platform = new OciPlatform { OS = "linux", Architecture = "arm64" } });
        Assert.Equal(arm.Digest, armArchive.SingleImage.ManifestDescriptor.Digest);
    }

    [Fact]
    public async Task NestedIndex_WithoutTheWantedPlatform_FailsNamingThePlatforms()
    {
        var layout = new TestImages.Layout();
        var arm = layout.AddImage([TestImages.MakeLayer(LayerCompression.Gzip, ("x", "y"))], "arm64").Manifest;
        var nested = ImageJson.Serialize(new OciIndex { Manifests = [arm] });
        layout.Add(nested);
        layout.IndexManifests.Add(TestImages.Describe(nested, MediaTypes.OciIndex));
        var path = _dir.File("arm-only.tar");
        layout.Write(path);

        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => OciArchive.OpenAsync(path, new OciArchiveOptions { Platform = OciPlatform.LinuxAmd64 }));
        Assert.Equal(ArchiveProblem.PlatformNotFound, e.Problem);
        Assert.Contains("linux/arm64", e.Message, StringComparison.Ordinal);
        Assert.Contains("linux/amd64", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CorruptLayer_SameSize_FailsWhileStreamingNamingTheBlob()
    {
        var layers = ThreeLayers();
        var layout = new TestImages.Layout();
        layout.IndexManifests.Add(layout.AddImage(layers).Manifest);
        var victim = layers[1].Digest;
        var path = _dir.File("corrupt.tar");
        layout.Write(path, (digest, data) =>
        {
            if (digest != victim)
            {
                return data;
            }

            var copy = data.ToArray();
            copy[copy.Length / 2] ^= 0xff;
            return copy;
        });

        await using var archive = await OciArchive.OpenAsync(path);
        await using (var good = archive.OpenBlob(layers[0].Digest))
        {
            await TestImages.ReadAllAsync(good);
        }

        await using var stream = archive.OpenBlob(victim);
        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => TestImages.ReadAllAsync(stream));
        Assert.Equal(ArchiveProblem.DigestMismatch, e.Problem);
        Assert.Equal(victim, e.BlobDigest);
        Assert.Contains(victim, e.Message, StringComparison.Ordinal);
        Assert.Contains("corrupt", e.Message, StringComparison.Ordinal);

        var verify = await Assert.ThrowsAsync<ImageArchiveException>(() => archive.VerifyAsync());
        Assert.Equal(victim, verify.BlobDigest);
    }

    [Fact]
    public async Task CorruptConfig_FailsAtOpenNamingTheConfig()
    {
        var layout = new TestImages.Layout();
        var (manifest, config) = layout.AddImage([TestImages.MakeLayer(LayerCompression.Gzip, ("x", "y"))]);
        layout.IndexManifests.Add(manifest);
        var configDigest = OciDigest.Compute(config);
        var path = _dir.File("bad-config.tar");
        layout.Write(path, (digest, data) => digest == configDigest ? Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(data).Replace("amd64", "arm64", StringComparison.Ordinal)) : data);

        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => OciArchive.OpenAsync(path));
        Assert.Equal(ArchiveProblem.DigestMismatch, e.Problem);
        Assert.Equal(configDigest, e.BlobDigest);
    }

    [Fact]
    public async Task TruncatedLayerBlob_FailsAtOpenNamingTheBlob()
    {
        var layers = ThreeLayers();
        var layout = new TestImages.Layout();
        layout.IndexManifests.Add(layout.AddImage(layers).Manifest);
        var victim = layers[2].Digest;
        var path = _dir.File("short-blob.tar");
        layout.Write(path, (digest, data) => digest == victim ? data[..(data.Length / 2)] : data);

        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => OciArchive.OpenAsync(path));
        Assert.Equal(ArchiveProblem.Truncated, e.Problem);
        Assert.Equal(victim, e.BlobDigest);
        Assert.Contains(victim, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TruncatedArchiveFile_FailsAtOpenNamingTheBlob()
    {
        var big = TestImages.MakeLayer(LayerCompression.None, ("big.bin", new string('x', 200_000)));
        var layout = new TestImages.Layout();
        layout.IndexManifests.Add(layout.AddImage([big]).Manifest);
        var path = _dir.File("cut.tar");
        // index.json first, then the blobs; the big layer is the largest entry, cut the file inside it
        layout.Write(path, (digest, data) => data, blobsLast: true);
        var bytes = await File.ReadAllBytesAsync(path);
        var at = bytes.AsSpan().IndexOf(big.Blob.AsSpan(0, 4096));
        Assert.True(at > 0);
        await File.WriteAllBytesAsync(path, bytes[..(at + 100_000)]);

        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => OciArchive.OpenAsync(path));
        Assert.True(e.Problem is ArchiveProblem.Truncated or ArchiveProblem.InvalidFormat, e.Message);
        Assert.Contains("truncated", e.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task MissingLayerBlob_FailsAtOpenNamingTheBlob()
    {
        var layers = ThreeLayers();
        var layout = new TestImages.Layout();
        layout.IndexManifests.Add(layout.AddImage(layers).Manifest);
        var victim = layers[0].Digest;
        var path = _dir.File("missing.tar");
        layout.Write(path, (digest, data) => digest == victim ? null : data);

        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => OciArchive.OpenAsync(path));
        Assert.Equal(ArchiveProblem.MissingBlob, e.Problem);
        Assert.Equal(victim, e.BlobDigest);
        Assert.Contains("missing", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task MissingManifest_FailsAtOpen()
    {
        var layout = new TestImages.Layout();
        var manifest = layout.AddImage([TestImages.MakeLayer(LayerCompression.Gzip, ("x", "y"))]).Manifest;
        layout.IndexManifests.Add(manifest);
        var path = _dir.File("no-manifest.tar");
        layout.Write(path, (digest, data) => digest == manifest.Digest ? null : data);

        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => OciArchive.OpenAsync(path));
        Assert.Equal(ArchiveProblem.MissingBlob, e.Problem);
        Assert.Equal(manifest.Digest, e.BlobDigest);
    }

    [Fact]
    public async Task NotATar_IsInvalidFormat()
    {
        var path = _dir.File("junk.tar");
        await File.WriteAllBytesAsync(path, Encoding.UTF8.GetBytes(new string('j', 3000)));
        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => OciArchive.OpenAsync(path));
        Assert.Equal(ArchiveProblem.InvalidFormat, e.Problem);
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TarWithoutIndexOrManifest_IsInvalidFormat()
    {
        var path = _dir.File("other.tar");
        TestImages.WriteTar(path, [("hello.txt", "hi"u8.ToArray())]);
        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => OciArchive.OpenAsync(path));
        Assert.Equal(ArchiveProblem.InvalidFormat, e.Problem);
        Assert.Contains("index.json", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task GzippedArchive_IsReadAndItsTemporaryCopyRemovedOnDispose()
    {
        var layout = new TestImages.Layout();
        layout.IndexManifests.Add(layout.AddImage(ThreeLayers()).Manifest with { Annotations = Named("gz:1") });
        var tar = _dir.File("image.tar");
        layout.Write(tar);
        var gz = _dir.File("image.tar.gz");
        await File.WriteAllBytesAsync(gz, TestImages.Gzip(await File.ReadAllBytesAsync(tar)));
        var temp = Directory.CreateDirectory(_dir.File("tmp")).FullName;

        var archive = await OciArchive.OpenAsync(gz, new OciArchiveOptions { TempDirectory = temp });
        Assert.Equal("gz:1", archive.SingleImage.Name);
        Assert.Single(Directory.GetFiles(temp));
        await archive.VerifyAsync();
        await archive.DisposeAsync();
        Assert.Empty(Directory.GetFiles(temp));
    }

    // ---------------------------------------------------------------- docker save

    private static (string Name, byte[] Data)[] DockerSave(TestImages.Layer[] layers, string[] repoTags, out byte[] config)
    {
        config = TestImages.ConfigJson(layers.Select(l => l.DiffId));
        var configName = OciDigest.Hex(OciDigest.Compute(config)) + ".json";
        var files = new List<(string, byte[])> { (configName, config) };
        var layerPaths = new List<string>();
        for (var i = 0; i < layers.Length; i++)
        {
            var dir = $"{i:x2}{new string('0', 62)}";
            files.Add(($"{dir}/layer.tar", layers[i].Blob));
            files.Add(($"{dir}/VERSION", "1.0"u8.ToArray()));
            layerPaths.Add($"{dir}/layer.tar");
        }

        var manifest = $"[{{\"Config\":\"{configName}\",\"RepoTags\":[{string.Join(',', repoTags.Select(t => $"\"{t}\""))}],\"Layers\":[{string.Join(',', layerPaths.Select(p => $"\"{p}\""))}]}}]";
        files.Add(("manifest.json", Encoding.UTF8.GetBytes(manifest)));
        return [.. files];
    }

    [Fact]
    public async Task DockerSave_IsConvertedToAnOciManifestWithComputedDigests()
    {
        TestImages.Layer[] layers =
        [
            TestImages.MakeLayer(LayerCompression.None, ("one", "1")),
            TestImages.MakeLayer(LayerCompression.None, ("two", "2")),
        ];
        var path = _dir.File("docker.tar");
        TestImages.WriteTar(path, DockerSave(layers, ["busybox:latest", "busybox:1"], out var config));

        await using var archive = await OciArchive.OpenAsync(path);
        Assert.Equal(ImageArchiveFormat.DockerSave, archive.Format);
        var image = archive.SingleImage;
        Assert.Equal(["busybox:latest", "busybox:1"], image.Names);
        Assert.Equal(MediaTypes.OciManifest, image.ManifestDescriptor.MediaType);
        Assert.Equal(MediaTypes.OciConfig, image.ConfigDescriptor.MediaType);
        Assert.Equal(OciDigest.Compute(config), image.ConfigDescriptor.Digest);
        Assert.Equal(config.Length, image.ConfigDescriptor.Size);
        Assert.Equal(layers.Select(l => l.Digest), image.Layers.Select(l => l.Digest));
        Assert.Equal(layers.Select(l => (long)l.Blob.Length), image.Layers.Select(l => l.Size));
        Assert.All(image.Layers, l => Assert.Equal(MediaTypes.OciLayer, l.MediaType));

        // the synthesised manifest is a real blob: streams, hashes to its digest, parses to the same manifest
        var manifestBytes = await archive.ReadBlobAsync(image.ManifestDescriptor.Digest);
        Assert.Equal(image.ManifestDescriptor.Digest, OciDigest.Compute(manifestBytes));
        Assert.Equal(image.Layers, ImageJson.DeserializeManifest(manifestBytes).Layers);
        await archive.VerifyAsync();

        // and deterministic: a second open gives the same manifest digest
        await using var again = await OciArchive.OpenAsync(path);
        Assert.Equal(image.ManifestDescriptor.Digest, again.SingleImage.ManifestDescriptor.Digest);
    }

    [Fact]
    public async Task DockerSave_WithGzipAndZstdLayerTars_DetectsTheCompression()
    {
        TestImages.Layer[] layers =
        [
            TestImages.MakeLayer(LayerCompression.Gzip, ("one", "1")),
            TestImages.MakeLayer(LayerCompression.Zstd, ("two", "2")),
        ];
        var path = _dir.File("docker-compressed.tar");
        TestImages.WriteTar(path, DockerSave(layers, ["c:1"], out _));

        await using var archive = await OciArchive.OpenAsync(path);
        var image = archive.SingleImage;
        Assert.Equal([MediaTypes.OciLayerGzip, MediaTypes.OciLayerZstd], image.Layers.Select(l => l.MediaType));
        Assert.Equal(layers.Select(l => l.Digest), image.Layers.Select(l => l.Digest));
    }

    [Fact]
    public async Task DockerSave_SharedLayerStoredAsSymlink_IsFollowed()
    {
        var layer = TestImages.MakeLayer(LayerCompression.None, ("one", "1"));
        var config = TestImages.ConfigJson([layer.DiffId, layer.DiffId]);
        var configName = OciDigest.Hex(OciDigest.Compute(config)) + ".json";
        var manifest = $"[{{\"Config\":\"{configName}\",\"RepoTags\":[\"dup:1\"],\"Layers\":[\"aa/layer.tar\",\"bb/layer.tar\"]}}]";
        var path = _dir.File("docker-symlink.tar");
        TestImages.WriteTar(path, [(configName, config), ("aa/layer.tar", layer.Blob), ("manifest.json", Encoding.UTF8.GetBytes(manifest))],
            [("bb/layer.tar", "../aa/layer.tar")]);

        await using var archive = await OciArchive.OpenAsync(path);
        Assert.Equal([layer.Digest, layer.Digest], archive.SingleImage.Layers.Select(l => l.Digest));
        await archive.VerifyAsync();
    }

    [Fact]
    public async Task DockerSave_LayerNotMatchingItsDiffId_FailsNamingTheLayer()
    {
        TestImages.Layer[] layers = [TestImages.MakeLayer(LayerCompression.None, ("one", "1"))];
        var files = DockerSave(layers, ["x:1"], out _);
        var index = Array.FindIndex(files, f => f.Name.EndsWith("layer.tar", StringComparison.Ordinal));
        var corrupt = files[index].Data.ToArray();
        corrupt[600] ^= 0x55; // inside the file data of the layer's only entry
        files[index] = (files[index].Name, corrupt);
        var path = _dir.File("docker-corrupt.tar");
        TestImages.WriteTar(path, files);

        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => OciArchive.OpenAsync(path));
        Assert.Equal(ArchiveProblem.DigestMismatch, e.Problem);
        Assert.Equal(layers[0].DiffId, e.BlobDigest);
        Assert.Contains(files[index].Name, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DockerSave_MissingLayer_FailsNamingIt()
    {
        TestImages.Layer[] layers = [TestImages.MakeLayer(LayerCompression.None, ("one", "1"))];
        var files = DockerSave(layers, ["x:1"], out _).Where(f => !f.Name.EndsWith("layer.tar", StringComparison.Ordinal)).ToArray();
        var path = _dir.File("docker-missing.tar");
        TestImages.WriteTar(path, files);

        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => OciArchive.OpenAsync(path));
        Assert.Equal(ArchiveProblem.MissingBlob, e.Problem);
        Assert.Contains("layer.tar", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DockerSave_ConfigNotMatchingItsFileName_FailsNamingIt()
    {
        TestImages.Layer[] layers = [TestImages.MakeLayer(LayerCompression.None, ("one", "1"))];
        var files = DockerSave(layers, ["x:1"], out var config);
        var index = Array.FindIndex(files, f => f.Name.EndsWith(".json", StringComparison.Ordinal) && f.Name != "manifest.json");
        files[index] = (files[index].Name, Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(config).Replace("/bin/sh", "/bin/ls", StringComparison.Ordinal)));
        var path = _dir.File("docker-bad-config.tar");
        TestImages.WriteTar(path, files);

        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => OciArchive.OpenAsync(path));
        Assert.Equal(ArchiveProblem.DigestMismatch, e.Problem);
        Assert.Equal(OciDigest.Compute(config), e.BlobDigest);
    }
}
