using System.Diagnostics;
using System.Text;
using Containerd.Services.Snapshots.V1;
using Containerd.Types;
using KataAgent.Containerd;
using KataAgent.Testing;

namespace KataAgent.Images.Tests;

/// <summary>Image import and inspection against a real private containerd. Each test works in its own namespace.</summary>
public sealed class ImageImportTests : ContainerdNamespaceTests, IClassFixture<ContainerdFixture>
{

    public ImageImportTests(ContainerdFixture containerd) : base(containerd, "imp")
    {
    }

    private async Task<string> BusyboxArchiveAsync()
    {
        Skip.IfNot(File.Exists("/bin/busybox"), "needs /bin/busybox (Debian package busybox-static)");
        return (await new BaseImageBuilder(Dir.File("cache")).BuildBusyboxAsync()).ArchivePath;
    }

    private async Task<(List<string> Content, List<string> Snapshots, List<string> Images, List<string> Leases)> StateAsync()
    {
        var content = (await Client.Content.ListAsync()).Select(c => $"{c.Digest} {string.Join(',', c.Labels.OrderBy(kv => kv.Key).Select(kv => kv.Key + "=" + kv.Value))}").Order().ToList();
        var snapshots = (await Client.Snapshots.ListAsync()).Select(s => $"{s.Name} {s.Kind} parent={s.Parent}").Order().ToList();
        var images = (await Client.Images.ListAsync()).Select(i => $"{i.Name} {i.Target.Digest} {i.UpdatedAt}").Order().ToList();
        var leases = (await Client.Leases.ListAsync()).Select(l => l.Id).ToList();
        return (content, snapshots, images, leases);
    }

    /// <summary>Runs a GC pass: deleting a lease with sync collects garbage before returning.</summary>
    private async Task CollectGarbageAsync()
    {
        var lease = await Client.Leases.CreateAsync();
        await Client.Leases.DeleteAsync(lease.Id, sync: true);
    }

    [SkippableFact]
    public async Task ImportTwice_GivesOneImage_NoDuplicateContent_AndTheSecondIsANoOp()
    {
        var archive = await BusyboxArchiveAsync();
        var importer = new ImageImporter(Client);

        var first = Assert.Single(await importer.ImportAsync(archive));
        Assert.Equal("kata-agent/busybox:latest", first.Name);
        Assert.Equal(3, first.BlobsWritten); // layer, config, manifest
        Assert.Equal(1, first.SnapshotsCommitted);
        Assert.True(first.RecordChanged);
        var afterFirst = await StateAsync();

        var second = Assert.Single(await importer.ImportAsync(archive));
        Assert.Equal((0, 0, false), (second.BlobsWritten, second.SnapshotsCommitted, second.RecordChanged));
        Assert.Equal(first.Target.Digest, second.Target.Digest);
        var afterSecond = await StateAsync();

        Assert.Equal(afterFirst.Content, afterSecond.Content); // same blobs, same labels
        Assert.Equal(afterFirst.Snapshots, afterSecond.Snapshots);
        Assert.Equal(afterFirst.Images, afterSecond.Images); // record not even touched (same updated_at)
        Assert.Single(afterSecond.Images);
        Assert.Equal(3, afterSecond.Content.Count);
        Assert.Single(afterSecond.Snapshots);
        Assert.Empty(afterSecond.Leases);
        var census = await LeakCensus.TakeAsync(Client, Containerd.Containerd.SocketPath);
        Assert.True(census.IsClean, census.ToString());
    }

    [SkippableFact]
    public async Task ImportedImage_CarriesGcLabels_SurvivesGc_AndGoesWithItsRecord()
    {
        var archive = await BusyboxArchiveAsync();
        var imported = Assert.Single(await new ImageImporter(Client).ImportAsync(archive));
        var details = await new ImageInspector(Client).InspectAsync(imported.Name);

        var manifest = await Client.Content.InfoAsync(details.Manifest.Digest);
        Assert.Equal(details.ConfigDescriptor.Digest, manifest.Labels[GcLabels.ContentConfig]);
        Assert.Equal(details.Layers[0].Digest, manifest.Labels[GcLabels.ContentLayerPrefix + "0"]);
        var config = await Client.Content.InfoAsync(details.ConfigDescriptor.Digest);
        Assert.Equal(details.ChainId, config.Labels["containerd.io/gc.ref.snapshot.overlayfs"]);
        var layer = await Client.Content.InfoAsync(details.Layers[0].Digest);
        Assert.Equal(details.DiffIds[0], layer.Labels[GcLabels.Uncompressed]);

        await CollectGarbageAsync();
        var kept = await StateAsync();
        Assert.Equal(3, kept.Content.Count);
        Assert.Single(kept.Snapshots);

        await Client.Images.DeleteAsync(imported.Name, sync: true);
        var gone = await StateAsync();
        Assert.Empty(gone.Content);
        Assert.Empty(gone.Snapshots);
    }

    [Fact]
    public async Task ThreeLayers_UncompressedGzipZstd_UnpackIntoASnapshotChainShowingTheFiles()
    {
        TestImages.Layer[] layers =
        [
            TestImages.MakeLayer(LayerCompression.None, ("a.txt", "plain"), ("shared.txt", "bottom")),
            TestImages.MakeLayer(LayerCompression.Gzip, ("b.txt", "gzip")),
            TestImages.MakeLayer(LayerCompression.Zstd, ("c.txt", "zstd"), ("shared.txt", "top")),
        ];
        var layout = new TestImages.Layout();
        var (manifest, _) = layout.AddImage(layers, labels: new Dictionary<string, string> { ["ai.backend.kernelspec"] = "1" });
        layout.IndexManifests.Add(manifest with { Annotations = new Dictionary<string, string> { ["org.opencontainers.image.ref.name"] = "test/three:1" } });
        var path = Dir.File("three.tar");
        layout.Write(path);

        var imported = Assert.Single(await new ImageImporter(Client).ImportAsync(path, new ImportOptions { Labels = new Dictionary<string, string> { ["origin"] = "test" } }));
        Assert.Equal(3, imported.SnapshotsCommitted);
        Assert.Equal(ChainId.Of(layers.Select(l => l.DiffId).ToList()), imported.ChainId);

        var details = await new ImageInspector(Client).InspectAsync("test/three:1");
        Assert.Equal(manifest.Digest, details.Target.Digest);
        Assert.Equal(imported.ChainId, details.ChainId);
        Assert.True(details.Unpacked);
        Assert.NotNull(details.UnpackedSize);
        Assert.Equal("1", details.Labels["ai.backend.kernelspec"]);
        Assert.Equal("test", details.RecordLabels["origin"]);
        Assert.Equal(manifest.Size + details.ConfigDescriptor.Size + layers.Sum(l => (long)l.Blob.Length), details.Size);
        Assert.Equal(layers.Select(l => l.DiffId), details.DiffIds);

        var chain = ChainId.Compute(layers.Select(l => l.DiffId).ToList());
        var snapshots = (await Client.Snapshots.ListAsync()).ToDictionary(s => s.Name);
        Assert.Equal(chain[1], snapshots[chain[2]].Parent);
        Assert.Equal(chain[0], snapshots[chain[1]].Parent);
        Assert.All(snapshots.Values, s => Assert.Equal(Kind.Committed, s.Kind));

        var files = await ReadThroughViewAsync(details.ChainId, "a.txt", "b.txt", "c.txt", "shared.txt");
        Assert.Equal(["plain", "gzip", "zstd", "top"], files);
    }

    [Fact]
    public async Task DockerSaveArchive_IsImportedUnderItsRepoTag()
    {
        var layer = TestImages.MakeLayer(LayerCompression.None, ("hello.txt", "from docker save"));
        var config = TestImages.ConfigJson([layer.DiffId]);
        var configName = OciDigest.Hex(OciDigest.Compute(config)) + ".json";
        var path = Dir.File("docker.tar");
        TestImages.WriteTar(path,
        [
            (configName, config),
            ("0123/layer.tar", layer.Blob),
            ("manifest.json", Encoding.UTF8.GetBytes($"[{{\"Config\":\"{configName}\",\"RepoTags\":[\"docker.io/library/saved:1\"],\"Layers\":[\"0123/layer.tar\"]}}]")),
        ]);

        var imported = Assert.Single(await new ImageImporter(Client).ImportAsync(path));
        Assert.Equal("docker.io/library/saved:1", imported.Name);
        var details = await new ImageInspector(Client).InspectAsync(imported.Name);
        Assert.Equal(MediaTypes.OciManifest, details.Target.MediaType);
        Assert.Equal(["from docker save"], await ReadThroughViewAsync(details.ChainId, "hello.txt"));
    }

    [Fact]
    public async Task CorruptLayer_FailsNamingTheBlob_AndLeavesNothingRegistered()
    {
        TestImages.Layer[] layers =
        [
            TestImages.MakeLayer(LayerCompression.Gzip, ("good.txt", "fine")),
            TestImages.MakeLayer(LayerCompression.Gzip, ("bad.txt", new string('b', 5000))),
        ];
        var layout = new TestImages.Layout();
        layout.IndexManifests.Add(layout.AddImage(layers).Manifest with { Annotations = new Dictionary<string, string> { ["org.opencontainers.image.ref.name"] = "test/corrupt:1" } });
        var path = Dir.File("corrupt.tar");
        layout.Write(path, (digest, data) =>
        {
            if (digest != layers[1].Digest)
            {
                return data;
            }

            var copy = data.ToArray();
            copy[^10] ^= 0x40; // same size, wrong bytes
            return copy;
        });

        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => new ImageImporter(Client).ImportAsync(path));
        Assert.Equal(ArchiveProblem.DigestMismatch, e.Problem);
        Assert.Equal(layers[1].Digest, e.BlobDigest);

        await AssertNothingRegisteredAsync();
    }

    [Fact]
    public async Task TruncatedLayer_FailsBeforeTouchingContainerd()
    {
        var layers = new[] { TestImages.MakeLayer(LayerCompression.Zstd, ("x.txt", "x")) };
        var layout = new TestImages.Layout();
        layout.IndexManifests.Add(layout.AddImage(layers).Manifest with { Annotations = new Dictionary<string, string> { ["org.opencontainers.image.ref.name"] = "test/short:1" } });
        var path = Dir.File("short.tar");
        layout.Write(path, (digest, data) => digest == layers[0].Digest ? data[..^3] : data);

        var e = await Assert.ThrowsAsync<ImageArchiveException>(() => new ImageImporter(Client).ImportAsync(path));
        Assert.Equal(ArchiveProblem.Truncated, e.Problem);
        Assert.Contains(layers[0].Digest, e.Message, StringComparison.Ordinal);
        await AssertNothingRegisteredAsync();
    }

    [Fact]
    public async Task LayerNotMatchingItsDiffId_FailsWhileUnpacking_AndRollsBackSnapshotsAndContent()
    {
        var good = TestImages.MakeLayer(LayerCompression.Gzip, ("one.txt", "1"));
        var bad = TestImages.MakeLayer(LayerCompression.Gzip, ("two.txt", "2"));
        var liar = bad with { DiffId = TestImages.MakeLayer(LayerCompression.None, ("other.txt", "?")).DiffId }; // blob intact, diff_id wrong
        var layout = new TestImages.Layout();
        layout.IndexManifests.Add(layout.AddImage([good, liar]).Manifest with { Annotations = new Dictionary<string, string> { ["org.opencontainers.image.ref.name"] = "test/liar:1" } });
        var path = Dir.File("liar.tar");
        layout.Write(path);

        var e = await Assert.ThrowsAsync<ImageImportException>(() => new ImageImporter(Client).ImportAsync(path));
        Assert.Contains("layer 1", e.Message, StringComparison.Ordinal);
        Assert.Contains(bad.Digest, e.Message, StringComparison.Ordinal);
        Assert.Contains("diff_id", e.Message, StringComparison.Ordinal);

        await AssertNothingRegisteredAsync();
    }

    [Fact]
    public async Task ImportingAnotherImageUnderTheSameName_RepointsTheRecord_AndTheOldOneIsCollectable()
    {
        string Archive(string file, string content)
        {
            var layout = new TestImages.Layout();
            layout.IndexManifests.Add(layout.AddImage([TestImages.MakeLayer(LayerCompression.Gzip, ("version.txt", content))]).Manifest);
            var path = Dir.File(file);
            layout.Write(path);
            return path;
        }

        var importer = new ImageImporter(Client);
        var v1Archive = Archive("v1.tar", "1");
        var v1 = Assert.Single(await importer.ImportAsync(v1Archive, new ImportOptions { Name = "test/app:latest" }));
        // Without Replace the name keeps its content (issue 13): the error names the image, nothing of v2 stays.
        var refused = await Assert.ThrowsAsync<ImageNameTakenException>(() => importer.ImportAsync(Archive("v2.tar", "2"), new ImportOptions { Name = "test/app:latest" }));
        Assert.Contains("'test/app:latest'", refused.Message, StringComparison.Ordinal);
        Assert.Contains("--replace", refused.Message, StringComparison.Ordinal);
        Assert.Equal(v1.Target.Digest, Assert.Single(await Client.Images.ListAsync()).Target.Digest);
        // The same archive again is no takeover: still allowed, still a no-op.
        Assert.False(Assert.Single(await importer.ImportAsync(v1Archive, new ImportOptions { Name = "test/app:latest" })).RecordChanged);
        var v2 = Assert.Single(await importer.ImportAsync(Archive("v2.tar", "2"), new ImportOptions { Name = "test/app:latest", Replace = true }));
        Assert.NotEqual(v1.Target.Digest, v2.Target.Digest);
        Assert.True(v2.RecordChanged);

        var record = Assert.Single(await Client.Images.ListAsync());
        Assert.Equal(v2.Target.Digest, record.Target.Digest);
        Assert.Equal(["2"], await ReadThroughViewAsync(v2.ChainId, "version.txt"));

        await CollectGarbageAsync();
        var state = await StateAsync();
        Assert.Equal(3, state.Content.Count); // only v2's manifest, config and layer are left
        Assert.DoesNotContain(state.Content, c => c.StartsWith(v1.Target.Digest, StringComparison.Ordinal));
        Assert.Equal([v2.ChainId], state.Snapshots.Select(s => s.Split(' ')[0]));
    }

    [Fact]
    public async Task Inspect_UnknownImage_IsNullOrNotFound()
    {
        var inspector = new ImageInspector(Client);
        Assert.Null(await inspector.FindAsync("no/such:image"));
        await Assert.ThrowsAsync<ContainerdNotFoundException>(() => inspector.InspectAsync("no/such:image"));
    }

    [SkippableFact]
    [Trait("Category", "Debootstrap")]
    public async Task PythonBaseImage_ImportsAndItsSnapshotHasPython()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess && File.Exists("/usr/sbin/debootstrap"), "building the python image needs root and debootstrap");
        var built = await new BaseImageBuilder().BuildPythonAsync(); // cached after the first run
        var imported = Assert.Single(await new ImageImporter(Client).ImportAsync(built.ArchivePath));
        var details = await new ImageInspector(Client).InspectAsync(imported.Name);
        Assert.Equal("kata-agent/python:3-bookworm", details.Name);
        Assert.Equal("python", details.Labels["ai.backend.runtime-type"]);
        Assert.Equal("/home/work", details.Config.Config!.WorkingDir);
        Assert.True(details.Unpacked);
        var files = await ReadThroughViewAsync(details.ChainId, "usr/lib/os-release");
        Assert.Contains("bookworm", files[0], StringComparison.Ordinal);
        Assert.Equal(["yes"], await ReadThroughViewAsync(details.ChainId, "usr/bin/python3", probeOnly: true));
    }

    private async Task AssertNothingRegisteredAsync()
    {
        var state = await StateAsync();
        Assert.Empty(state.Images);
        Assert.Empty(state.Leases);
        Assert.Empty(state.Snapshots);
        Assert.Empty(state.Content); // the failed import's lease was deleted with a synchronous GC
    }

    /// <summary>Mounts a read-only view of a committed snapshot and reads files through it.</summary>
    private async Task<List<string>> ReadThroughViewAsync(string chainId, string file, params string[] more)
        => await ReadThroughViewAsync(chainId, [file, .. more], probeOnly: false);

    private async Task<List<string>> ReadThroughViewAsync(string chainId, string[] files, bool probeOnly)
    {
        var key = "test-view-" + Guid.NewGuid().ToString("N")[..8];
        var target = Directory.CreateDirectory(Dir.File(key)).FullName;
        // a snapshot nothing references is garbage: hold the view under a lease, as a container would be
        var lease = await Client.Leases.CreateAsync(expiresAfter: TimeSpan.FromMinutes(10));
        using var leased = Client.WithLease(lease.Id);
        var mounts = await leased.Snapshots.ViewAsync(key, chainId);
        try
        {
            var mount = Assert.Single(mounts);
            await MountAsync(mount, target);
            try
            {
                var result = new List<string>();
                foreach (var file in files)
                {
                    var full = Path.Combine(target, file);
                    result.Add(probeOnly ? (File.Exists(full) ? "yes" : "no") : await File.ReadAllTextAsync(full));
                }

                return result;
            }
            finally
            {
                await RunAsync("umount", target);
            }
        }
        finally
        {
            await Client.Snapshots.RemoveAsync(key);
            await Client.Leases.DeleteAsync(lease.Id);
        }
    }

    private Task<List<string>> ReadThroughViewAsync(string chainId, string file, bool probeOnly)
        => ReadThroughViewAsync(chainId, [file], probeOnly);

    private static Task MountAsync(Mount mount, string target)
    {
        var options = string.Join(',', mount.Options);
        return mount.Type == "bind"
            ? RunAsync("mount", "-o", options, mount.Source, target)
            : RunAsync("mount", "-t", mount.Type, "-o", options, mount.Source, target);
    }

    private static async Task RunAsync(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program, args) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', args)}: {await stderr}");
    }
}
