using System.Diagnostics;
using KataAgent.Containerd;
using KataAgent.Images.Registry;
using KataAgent.Testing;
using Xunit.Abstractions;
using static KataAgent.Images.Tests.Registry.RegistryTestSupport;

namespace KataAgent.Images.Tests.Registry;

/// <summary>
/// Push and pull against Debian's docker-registry on 127.0.0.1 (one open, one with htpasswd basic auth), with a private
/// containerd. Each test works in its own containerd namespace and its own repository.
/// </summary>
public sealed class RegistryPullPushTests : ContainerdNamespaceTests, IClassFixture<ContainerdFixture>, IClassFixture<RegistryFixture>
{
    private const int LayerSize = 3 * 1024 * 1024;
    private readonly RegistryFixture _registries;
    private readonly ITestOutputHelper _output;

    public RegistryPullPushTests(ContainerdFixture containerd, RegistryFixture registries, ITestOutputHelper output) : base(containerd, "reg")
    {
        _registries = registries;
        _output = output;
    }

    private string Socket => Containerd.Containerd.SocketPath;

    private static string Repo() => "test/r" + Guid.NewGuid().ToString("N")[..10];

    /// <summary>Imports a three-layer image (plain, gzip, zstd), pushes it to <paramref name="host"/> and removes it locally.</summary>
    private async Task<(ImageReference Reference, Published Image, TestImages.Layer[] Layers)> PublishThreeLayersAsync(string host, RegistryClient registry, int seed,
        PushOptions? push = null)
    {
        var layers = ThreeLayers(LayerSize, seed);
        var local = "local/three:" + seed;
        var imported = await ImportAsync(Client, Dir, local, layers);
        var reference = ImageReference.Parse($"{host}/{Repo()}:v1");
        var config = (await new ImageInspector(Client).InspectAsync(local)).ConfigDescriptor.Digest;
        await new ImagePusher(Client, registry).PushAsync(local, reference, push);
        await RemoveImageAsync(Client, local);
        Assert.Empty((await StateAsync(Client)).Content);
        return (reference, new Published(imported.Target, config), layers);
    }

    private sealed record Published(OciDescriptor Target, string ConfigDigest);

    // ---------------------------------------------------------------- the base image round trip

    [SkippableFact]
    public async Task PythonImage_Push_RemoveLocally_PullBack_HasPython3_AndPullingAgainChangesNothing()
    {
        var registryHost = _registries.Open.Host;
        var python = await KataAgent.Testing.TestImages.ImportPythonAsync(Client);
        using var registry = OpenClient();
        var reference = ImageReference.Parse($"{registryHost}/kata/python:{Guid.NewGuid().ToString("N")[..8]}");

        // chunked upload (PATCH) with small chunks, so the layer takes several
        var pushEvents = new Recorder<PushProgress>();
        var pushed = await new ImagePusher(Client, registry).PushAsync(python.Name, reference,
            new PushOptions { UploadMode = BlobUploadMode.Chunked, ChunkSize = 8 * 1024 * 1024 }, pushEvents);
        Assert.Equal(python.Target.Digest, pushed.Target.Digest);
        Assert.Equal(0, pushed.BlobsSkipped);
        Assert.True(pushed.BlobsUploaded >= 2);
        Assert.Equal(pushEvents.Events[^1].Event.TotalBytes, pushEvents.Events[^1].Event.CompletedBytes);
        Assert.Equal(PushPhase.Done, pushEvents.Events[^1].Event.Phase);

        // the registry now holds the very bytes: pushing again uploads nothing
        var again = await new ImagePusher(Client, registry).PushAsync(python.Name, reference);
        Assert.Equal((0, pushed.BlobsUploaded), (again.BlobsUploaded, again.BlobsSkipped));

        await RemoveImageAsync(Client, python.Name);
        var empty = await StateAsync(Client);
        Assert.Empty(empty.Content);
        Assert.Empty(empty.Snapshots);

        var pullEvents = new Recorder<PullProgress>();
        var pulled = await new ImagePuller(Client, registry).PullAsync(reference, new PullOptions { Name = python.Name }, pullEvents);
        Assert.False(pulled.AlreadyPresent);
        Assert.Equal(python.Target.Digest, pulled.Target.Digest);
        Assert.Equal(python.ChainId, pulled.ChainId);
        Assert.Equal(registryHost, pulled.Source);
        Assert.True(pulled.RecordChanged);
        Assert.Equal(["yes", "yes"], await ReadThroughViewAsync(Client, Dir, pulled.ChainId, ["usr/bin/python3", "etc/os-release"], probeOnly: true));
        var details = await new ImageInspector(Client).InspectAsync(python.Name);
        Assert.True(details.Unpacked);
        Assert.Equal(python.Config.Config?.Cmd, details.Config.Config?.Cmd);

        // throughput: fetch phase (registry -> content store) against a plain copy of the same bytes
        var events = pullEvents.Events;
        var fetchStart = events.First(e => e.Event.Phase == PullPhase.Fetching).At;
        var fetchEnd = events.First(e => e.Event.Phase == PullPhase.Unpacking).At;
        var total = events[^1].Event.TotalBytes;
        var copyTime = await TimeFileCopyAsync(details.Layers.Select(l => _registries.Open.BlobPath(l.Digest)).Append(_registries.Open.BlobPath(details.ConfigDescriptor.Digest)));
        _output.WriteLine($"pull of {total / 1e6:F1} MB from the local registry: fetch {(fetchEnd - fetchStart).TotalSeconds:F2} s = {total / 1e6 / (fetchEnd - fetchStart).TotalSeconds:F0} MB/s; " +
            $"whole pull incl. unpack {pulled.Elapsed.TotalSeconds:F2} s = {total / 1e6 / pulled.Elapsed.TotalSeconds:F0} MB/s; " +
            $"plain file copy of the same bytes {copyTime.TotalSeconds:F3} s = {total / 1e6 / copyTime.TotalSeconds:F0} MB/s");
        File.WriteAllText(Path.Combine(AppContext.BaseDirectory, "pull-throughput.txt"),
            $"bytes={total} fetch_s={(fetchEnd - fetchStart).TotalSeconds:F3} pull_s={pulled.Elapsed.TotalSeconds:F3} copy_s={copyTime.TotalSeconds:F3}\n");

        // progress: every blob reached Done, every layer Unpacked, totals add up
        foreach (var layer in details.Layers)
        {
            Assert.Contains(events, e => e.Event.Blob is { } b && b.Digest == layer.Digest && b.State == BlobState.Done && b.Transferred == layer.Size);
            Assert.Contains(events, e => e.Event.Blob is { } b && b.Digest == layer.Digest && b.State == BlobState.Unpacked);
        }

        Assert.Equal(PullPhase.Done, events[^1].Event.Phase);
        Assert.Equal(total, events[^1].Event.CompletedBytes);
        Assert.Equal(details.Layers.Sum(l => l.Size) + details.ConfigDescriptor.Size, total);

        // pulling what is complete locally: quick, nothing changes (record not even touched)
        var before = await StateAsync(Client);
        var stopwatch = Stopwatch.StartNew();
        var second = await new ImagePuller(Client, registry).PullAsync(reference, new PullOptions { Name = python.Name });
        stopwatch.Stop();
        Assert.True(second.AlreadyPresent);
        Assert.Equal((0, 0L, 0, false), (second.BlobsFetched, second.BytesDownloaded, second.SnapshotsCommitted, second.RecordChanged));
        Assert.Equal(before, await StateAsync(Client), new StateComparer());
        _output.WriteLine($"second pull (already present): {stopwatch.Elapsed.TotalMilliseconds:F0} ms");
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(10), $"a no-op pull took {stopwatch.Elapsed}");
        var census = await LeakCensus.TakeAsync(Client, Socket);
        Assert.True(census.IsClean, census.ToString());
    }

    private static async Task<TimeSpan> TimeFileCopyAsync(IEnumerable<string> files)
    {
        using var dir = new TempDir();
        var stopwatch = Stopwatch.StartNew();
        var i = 0;
        foreach (var file in files)
        {
            var target = dir.File("copy" + i++);
            await using (var source = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, useAsync: true))
            await using (var destination = new FileStream(target, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20, useAsync: true))
            {
                await source.CopyToAsync(destination);
                await destination.FlushAsync();
                destination.Flush(flushToDisk: true);
            }
        }

        return stopwatch.Elapsed;
    }

    private sealed class StateComparer : IEqualityComparer<StoreState>
    {
        public bool Equals(StoreState? x, StoreState? y)
            => x is not null && y is not null && x.Content.SequenceEqual(y.Content) && x.Snapshots.SequenceEqual(y.Snapshots)
               && x.Images.SequenceEqual(y.Images) && x.Leases.SequenceEqual(y.Leases);

        public int GetHashCode(StoreState obj) => obj.Content.Count;
    }

    // ---------------------------------------------------------------- compression, digest references, index

    [SkippableFact]
    public async Task ThreeLayers_PlainGzipZstd_PushMonolithic_PullByTagThenByDigest_UnpacksTheFiles()
    {
        using var registry = OpenClient();
        var (reference, image, layers) = await PublishThreeLayersAsync(_registries.Open.Host, registry, seed: 10, new PushOptions { UploadMode = BlobUploadMode.Monolithic });

        var byTag = await new ImagePuller(Client, registry).PullAsync(reference);
        Assert.Equal(reference.ToString(), byTag.Name);
        Assert.Equal(image.Target.Digest, byTag.Target.Digest);
        Assert.Equal(3, byTag.SnapshotsCommitted);
        Assert.Equal(4, byTag.BlobsFetched); // config + 3 layers
        var hashes = new List<string>();
        foreach (var file in new[] { "plain.bin", "gzip.bin", "zstd.bin" })
        {
            hashes.Add(await HashThroughViewAsync(Client, Dir, byTag.ChainId, file));
        }

        Assert.Equal(layers.Select(l => ExpectedFileDigest(l)), hashes);

        // by digest: a record named by the digest reference; the blobs are shared, so nothing is downloaded again
        var pinned = reference.WithDigest(image.Target.Digest);
        var byDigest = await new ImagePuller(Client, registry).PullAsync(pinned.ToString());
        Assert.Equal($"{reference.Name}@{image.Target.Digest}", byDigest.Name);
        Assert.Equal(image.Target.Digest, byDigest.Target.Digest);
        Assert.Equal((0, 0L, 0), (byDigest.BlobsFetched, byDigest.BytesDownloaded, byDigest.SnapshotsCommitted));
        Assert.True(byDigest.RecordChanged);
        var record = await Client.Images.GetAsync(byDigest.Name);
        Assert.Equal(image.Target.Digest, record.Target.Digest);

        // a pinned digest complete locally needs no registry at all: point the reference at a port nobody listens on
        var nowhere = ImageReference.Parse($"127.0.0.1:{RegistryServer.FreePort()}/{reference.Repository}@{image.Target.Digest}");
        var offline = await new ImagePuller(Client, registry).PullAsync(nowhere, new PullOptions { Name = byDigest.Name });
        Assert.True(offline.AlreadyPresent);

        // a digest the registry does not have: a clear not-found naming it
        var unknown = reference.WithDigest(OciDigest.Compute("nothing"u8));
        var error = await Assert.ThrowsAsync<RegistryNotFoundException>(() => new ImagePuller(Client, registry).PullAsync(unknown));
        Assert.Contains(OciDigest.Compute("nothing"u8), error.Message);
        Assert.Contains("MANIFEST_UNKNOWN", error.ErrorCodes);
        var missingTag = await Assert.ThrowsAsync<RegistryNotFoundException>(() => new ImagePuller(Client, registry).PullAsync(reference.WithTag("nope")));
        Assert.Contains(":nope", missingTag.Message);
        Assert.Empty((await StateAsync(Client)).Leases);
    }

    private static string ExpectedFileDigest(TestImages.Layer layer)
    {
        using var reader = new System.Formats.Tar.TarReader(new MemoryStream(layer.Tar));
        var entry = reader.GetNextEntry()!;
        return OciDigest.ComputeAsync(entry.DataStream!, CancellationToken.None).GetAwaiter().GetResult();
    }

    [SkippableFact]
    public async Task DockerManifestList_PullPicksLinuxAmd64_AndFetchesOnlyItsBlobs()
    {
        using var registry = OpenClient();
        var repository = registry.Repository(ImageReference.Parse($"{_registries.Open.Host}/{Repo()}"), push: true);
        var amd64 = await UploadDockerImageAsync(repository, "amd64", seed: 20);
        var arm64 = await UploadDockerImageAsync(repository, "arm64", seed: 21);
        var list = System.Text.Encoding.UTF8.GetBytes($$$"""
            {"schemaVersion":2,"mediaType":"{{{MediaTypes.DockerManifestList}}}","manifests":[
              {"mediaType":"{{{MediaTypes.DockerManifest}}}","digest":"{{{arm64.Manifest.Digest}}}","size":{{{arm64.Manifest.Size}}},"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
              {"mediaType":"{{{MediaTypes.DockerManifest}}}","digest":"{{{amd64.Manifest.Digest}}}","size":{{{amd64.Manifest.Size}}},"platform":{"architecture":"amd64","os":"linux"}}]}
            """);
        await repository.PutManifestAsync("multi", MediaTypes.DockerManifestList, list);

        var reference = ImageReference.Parse($"{_registries.Open.Host}/{repository.Name}:multi");
        var pulled = await new ImagePuller(Client, registry).PullAsync(reference);
        Assert.Equal(MediaTypes.DockerManifestList, pulled.Target.MediaType);
        Assert.Equal(OciDigest.Compute(list), pulled.Target.Digest);
        Assert.Equal(amd64.Manifest.Digest, pulled.Manifest.Digest);
        Assert.Equal(MediaTypes.DockerManifest, pulled.Manifest.MediaType);
        Assert.Equal("amd64", pulled.Config.Architecture);
        Assert.Null(await Client.Content.FindAsync(arm64.Layer.Digest));
        Assert.Null(await Client.Content.FindAsync(arm64.Manifest.Digest));
        Assert.Equal(["amd64"], await ReadThroughViewAsync(Client, Dir, pulled.ChainId, ["arch.txt"]));

        // the index carries GC references to its manifests: the image survives a GC and goes with its record
        var index = await Client.Content.InfoAsync(pulled.Target.Digest);
        Assert.Equal(amd64.Manifest.Digest, index.Labels[GcLabels.ContentManifestPrefix + "1"]);
        var lease = await Client.Leases.CreateAsync();
        await Client.Leases.DeleteAsync(lease.Id, sync: true);
        Assert.Equal(4, (await StateAsync(Client)).Content.Count); // index, manifest, config, layer
        var details = await new ImageInspector(Client).InspectAsync(pulled.Name, platform: OciPlatform.LinuxAmd64);
        Assert.Equal(pulled.ChainId, details.ChainId);
        await RemoveImageAsync(Client, pulled.Name);
        Assert.Empty((await StateAsync(Client)).Content);

        // a platform the list lacks: a clear error naming what there is
        var error = await Assert.ThrowsAsync<ImageTransferException>(() => new ImagePuller(Client, registry).PullAsync(reference,
            new PullOptions { Platform = new OciPlatform { OS = "linux", Architecture = "s390x" } }));
        Assert.Contains("linux/s390x", error.Message);
        Assert.Contains("linux/arm64/v8", error.Message);
    }

    private static async Task<(OciDescriptor Manifest, OciDescriptor Layer)> UploadDockerImageAsync(RegistryRepository repository, string arch, int seed)
    {
        var layer = TestImages.MakeLayer(LayerCompression.Gzip, ("arch.txt", arch), ("seed.txt", seed.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        var config = TestImages.ConfigJson([layer.DiffId], arch);
        var configDescriptor = TestImages.Describe(config, MediaTypes.DockerConfig);
        var layerDescriptor = new OciDescriptor { MediaType = MediaTypes.DockerLayerGzip, Digest = layer.Digest, Size = layer.Blob.Length };
        foreach (var (descriptor, data) in new[] { (configDescriptor, config), (layerDescriptor, layer.Blob) })
        {
            await repository.UploadBlobAsync(descriptor, (offset, length, destination, ct) => destination.WriteAsync(data.AsMemory((int)offset, (int)length), ct).AsTask(),
                BlobUploadMode.Monolithic, 1 << 20);
        }

        var manifest = ImageJson.Serialize(new OciManifest { MediaType = MediaTypes.DockerManifest, Config = configDescriptor, Layers = [layerDescriptor] });
        await repository.PutManifestAsync(OciDigest.Compute(manifest), MediaTypes.DockerManifest, manifest);
        return (TestImages.Describe(manifest, MediaTypes.DockerManifest), layerDescriptor);
    }

    // ---------------------------------------------------------------- auth

    [SkippableFact]
    public async Task BasicAuth_RightCredentialsPushAndPull_WrongPasswordAndNoCredentialsFailClearly()
    {
        var host = _registries.Auth.Host;
        var good = new RegistryOptions { Hosts = new Dictionary<string, RegistryHostOptions> { [host] = new() { Username = RegistryFixture.User, Password = RegistryFixture.Password } } };
        var bad = new RegistryOptions { Hosts = new Dictionary<string, RegistryHostOptions> { [host] = new() { Username = RegistryFixture.User, Password = "wrong" } } };
        using var goodClient = new RegistryClient(good);
        using var badClient = new RegistryClient(bad);
        using var anonymous = OpenClient();

        var layers = new[] { TestImages.MakeLayer(LayerCompression.Gzip, ("hello.txt", "auth")) };
        var local = "local/auth:1";
        await ImportAsync(Client, Dir, local, layers);
        var reference = ImageReference.Parse($"{host}/{Repo()}:1");

        var denied = await Assert.ThrowsAsync<RegistryAuthenticationException>(() => new ImagePusher(Client, badClient).PushAsync(local, reference));
        Assert.Contains($"registry {host} rejected the credentials of user '{RegistryFixture.User}'", denied.Message);
        var anonymousPush = await Assert.ThrowsAsync<RegistryAuthenticationException>(() => new ImagePusher(Client, anonymous).PushAsync(local, reference));
        Assert.Contains($"registry {host} requires credentials", anonymousPush.Message);

        await new ImagePusher(Client, goodClient).PushAsync(local, reference);
        await RemoveImageAsync(Client, local);

        var wrong = await Assert.ThrowsAsync<RegistryAuthenticationException>(() => new ImagePuller(Client, badClient).PullAsync(reference));
        Assert.Contains("rejected the credentials", wrong.Message);
        Assert.Contains(host, wrong.Message);
        var none = await Assert.ThrowsAsync<RegistryAuthenticationException>(() => new ImagePuller(Client, anonymous).PullAsync(reference));
        Assert.Contains("requires credentials", none.Message);
        await AssertNothingLeftAsync(Client, Socket, layers.Select(l => l.Digest));

        var pulled = await new ImagePuller(Client, goodClient).PullAsync(reference);
        Assert.Equal(["auth"], await ReadThroughViewAsync(Client, Dir, pulled.ChainId, ["hello.txt"]));
    }

    // ---------------------------------------------------------------- corruption, interruption

    [SkippableFact]
    public async Task CorruptedBlob_FailsNamingTheBlob_AndRegistersNothing()
    {
        using var registry = OpenClient();
        var (reference, image, layers) = await PublishThreeLayersAsync(_registries.Open.Host, registry, seed: 30);
        await using var proxy = new RegistryProxy(_registries.Open.Host);
        var corrupted = layers[1].Digest;
        proxy.Corrupt(corrupted);
        var viaProxy = ImageReference.Parse($"{proxy.Host}/{reference.Repository}:{reference.Tag}");

        var error = await Assert.ThrowsAsync<BlobDigestMismatchException>(() => new ImagePuller(Client, registry).PullAsync(viaProxy));
        Assert.Equal(corrupted, error.Digest);
        Assert.Contains(corrupted, error.Message);
        Assert.Contains("corrupt", error.Message);
        await AssertNothingLeftAsync(Client, Socket, layers.Select(l => l.Digest).Append(image.Target.Digest));

        // a registry that serves good bytes again: the same pull works
        proxy.Reset();
        var pulled = await new ImagePuller(Client, registry).PullAsync(viaProxy);
        Assert.Equal(image.Target.Digest, pulled.Target.Digest);
    }

    [SkippableFact]
    public async Task CorruptedBlob_InAResumedDownload_IsCaughtByTheContentStore()
    {
        using var registry = new RegistryClient(new RegistryOptions { MaxConcurrentTransfers = 1 });
        var (reference, _, layers) = await PublishThreeLayersAsync(_registries.Open.Host, registry, seed: 35);
        await using var proxy = new RegistryProxy(_registries.Open.Host);
        var viaProxy = ImageReference.Parse($"{proxy.Host}/{reference.Repository}:{reference.Tag}");
        var target = layers[0];
        await InterruptAsync(registry, proxy, viaProxy, target, 1024 * 1024);

        proxy.Reset();
        proxy.Corrupt(target.Digest); // the rest of the blob, sent for the Range request, has a flipped byte
        var error = await Assert.ThrowsAsync<BlobDigestMismatchException>(() => new ImagePuller(Client, registry).PullAsync(viaProxy));
        Assert.Equal(target.Digest, error.Digest);
        Assert.Contains(proxy.Requests, r => r.Contains(target.Digest, StringComparison.Ordinal) && r.Contains("bytes=", StringComparison.Ordinal));
        await AssertNothingLeftAsync(Client, Socket, layers.Select(l => l.Digest));
    }

    /// <summary>Starts a pull through the proxy, stalls <paramref name="target"/> after <paramref name="after"/> bytes, waits until
    /// containerd holds part of it, cancels. Returns the ingest offset the cancelled pull left.</summary>
    private async Task<long> InterruptAsync(RegistryClient registry, RegistryProxy proxy, ImageReference viaProxy, TestImages.Layer target, long after)
    {
        proxy.StallAfter(target.Digest, after);
        using var cancel = new CancellationTokenSource();
        var pull = new ImagePuller(Client, registry).PullAsync(viaProxy, cancellationToken: cancel.Token);
        await proxy.Stalled.WaitAsync(TimeSpan.FromSeconds(60));
        var reference = ImagePuller.IngestRef(target.Digest);
        long offset = 0;
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(30))
        {
            // the downloader hands bytes to containerd in pieces: wait until it has all it can get
            var status = await Client.Content.StatusAsync(reference);
            if (status is not null && status.Offset > 0 && status.Offset == offset)
            {
                break;
            }

            offset = status?.Offset ?? 0;
            await Task.Delay(200);
        }

        Assert.True(offset > 0, "the stalled blob never reached the content store");
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pull);
        return offset;
    }

    [SkippableFact]
    public async Task InterruptedPull_ResumesFromTheIngestOffset_WithoutRefetchingFinishedBlobs()
    {
        // one transfer at a time: config, layer 0, then layer 1 stalls half way
        using var registry = new RegistryClient(new RegistryOptions { MaxConcurrentTransfers = 1 });
        var (reference, image, layers) = await PublishThreeLayersAsync(_registries.Open.Host, registry, seed: 40);
        await using var proxy = new RegistryProxy(_registries.Open.Host);
        var viaProxy = ImageReference.Parse($"{proxy.Host}/{reference.Repository}:{reference.Tag}");
        var stalled = layers[1];

        var offset = await InterruptAsync(registry, proxy, viaProxy, stalled, stalled.Blob.Length / 2);
        Assert.NotNull(await Client.Content.FindAsync(layers[0].Digest));
        Assert.Null(await Client.Content.FindAsync(stalled.Digest));
        Assert.Null(await Client.Content.FindAsync(layers[2].Digest));
        var kept = await StateAsync(Client);
        Assert.Empty(kept.Images);
        var keptLease = Assert.Single(await Client.Leases.ListAsync());
        Assert.Equal(image.Target.Digest, keptLease.Labels[ImagePuller.ManifestLabel]);
        Assert.Contains(await Client.Leases.ListResourcesAsync(keptLease.Id), r => r.Type == "ingests" && r.Id == ImagePuller.IngestRef(stalled.Digest));
        _output.WriteLine($"interrupted: layer 1 ingest at {offset} of {stalled.Blob.Length} bytes");

        // survives a GC while interrupted (the lease holds it)
        var gc = await Client.Leases.CreateAsync();
        await Client.Leases.DeleteAsync(gc.Id, sync: true);
        Assert.Equal(offset, (await Client.Content.StatusAsync(ImagePuller.IngestRef(stalled.Digest)))!.Offset);

        proxy.Reset();
        var events = new Recorder<PullProgress>();
        var pulled = await new ImagePuller(Client, registry).PullAsync(viaProxy, progress: events);
        Assert.Equal(image.Target.Digest, pulled.Target.Digest);
        Assert.Equal(0, proxy.ServedFor(layers[0].Digest)); // finished blob: not downloaded again
        Assert.Equal(0, proxy.ServedFor(image.ConfigDigest));
        Assert.Equal(stalled.Blob.Length - offset, proxy.ServedFor(stalled.Digest)); // only the rest, by a Range request
        Assert.Contains(proxy.Requests, r => r.Contains(stalled.Digest, StringComparison.Ordinal) && r.EndsWith($"bytes={offset}-", StringComparison.Ordinal));
        Assert.Equal(layers[2].Blob.Length, proxy.ServedFor(layers[2].Digest));
        Assert.Equal((2, 1), (pulled.BlobsFetched, pulled.BlobsResumed));
        Assert.Equal(stalled.Blob.Length - offset + layers[2].Blob.Length, pulled.BytesDownloaded);
        Assert.Contains(events.Events, e => e.Event.Blob is { State: BlobState.Present } b && b.Digest == layers[0].Digest);
        Assert.Contains(events.Events, e => e.Event.Blob is { State: BlobState.Transferring } b && b.Digest == stalled.Digest && b.Transferred == offset);

        Assert.Equal(layers.Select(ExpectedFileDigest).ToList(), [
            await HashThroughViewAsync(Client, Dir, pulled.ChainId, "plain.bin"),
            await HashThroughViewAsync(Client, Dir, pulled.ChainId, "gzip.bin"),
            await HashThroughViewAsync(Client, Dir, pulled.ChainId, "zstd.bin"),
        ]);
        var census = await LeakCensus.TakeAsync(Client, Socket);
        Assert.True(census.IsClean, census.ToString());
    }

    // ---------------------------------------------------------------- mirrors, plain http, references

    [SkippableFact]
    public async Task Mirror_IsTriedFirst_AndADeadMirrorFallsThroughToTheRegistry()
    {
        using var publisher = OpenClient();
        var (reference, image, _) = await PublishThreeLayersAsync(_registries.Open.Host, publisher, seed: 50);

        // "upstream" is a port nobody listens on: the image can only come from the mirror
        var upstream = $"127.0.0.1:{RegistryServer.FreePort()}";
        var deadMirror = $"127.0.0.1:{RegistryServer.FreePort()}";
        var options = new RegistryOptions
        {
            Hosts = new Dictionary<string, RegistryHostOptions> { [upstream] = new() { Mirrors = [deadMirror, "http://" + _registries.Open.Host] } },
        };
        using var registry = new RegistryClient(options);
        var viaMirror = ImageReference.Parse($"{upstream}/{reference.Repository}:{reference.Tag}");
        var pulled = await new ImagePuller(Client, registry).PullAsync(viaMirror);
        Assert.Equal(_registries.Open.Host, pulled.Source);
        Assert.Equal(image.Target.Digest, pulled.Target.Digest);
        Assert.Equal(viaMirror.ToString(), pulled.Name);

        // the registry itself as the fallback when the only mirror is dead
        var fallback = new RegistryOptions
        {
            Hosts = new Dictionary<string, RegistryHostOptions> { [_registries.Open.Host] = new() { Mirrors = [deadMirror] } },
        };
        using var withDeadMirror = new RegistryClient(fallback);
        var direct = await new ImagePuller(Client, withDeadMirror).PullAsync(reference);
        Assert.Equal(_registries.Open.Host, direct.Source);
    }

    [Fact]
    public void Endpoints_PlainHttpForLoopbackOnly_DockerHubAtRegistry1()
    {
        using var registry = new RegistryClient(new RegistryOptions
        {
            Hosts = new Dictionary<string, RegistryHostOptions>
            {
                ["internal.example:5000"] = new() { PlainHttp = true },
                ["localhost:5000"] = new() { PlainHttp = false },
            },
        });
        Assert.Equal("http://127.0.0.1:5000/", registry.Endpoint("127.0.0.1:5000").BaseUri.ToString());
        Assert.Equal("http://[::1]:5000/", registry.Endpoint("[::1]:5000").BaseUri.ToString());
        Assert.Equal("https://registry-1.docker.io/", registry.Endpoint("docker.io").BaseUri.ToString());
        Assert.Equal("https://ghcr.io/", registry.Endpoint("ghcr.io").BaseUri.ToString());
        Assert.Equal("http://internal.example:5000/", registry.Endpoint("internal.example:5000").BaseUri.ToString());
        Assert.Equal("https://localhost:5000/", registry.Endpoint("localhost:5000").BaseUri.ToString());
        var sources = new RegistryClient(new RegistryOptions
        {
            Hosts = new Dictionary<string, RegistryHostOptions> { ["docker.io"] = new() { Mirrors = ["mirror.example/prefix", "http://127.0.0.1:5001"] } },
        }).PullSources(ImageReference.Parse("python:3"));
        Assert.Equal(["https://mirror.example/prefix/", "http://127.0.0.1:5001/", "https://registry-1.docker.io/"], sources.Select(s => s.Endpoint.BaseUri.ToString()));
        Assert.Equal([true, true, false], sources.Select(s => s.Endpoint.IsMirror));
        Assert.All(sources, s => Assert.Equal("library/python", s.Name));
    }
}
