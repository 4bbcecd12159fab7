using System.Diagnostics;
using System.Formats.Tar;
using KataAgent.Containerd;
using KataAgent.Images.Registry;
using KataAgent.Testing;

namespace KataAgent.Images.Tests.Registry;

/// <summary>Two test registries (open, and basic auth) shared by the tests of a class; stopped on dispose whatever happened.</summary>
public sealed class RegistryFixture : IAsyncLifetime
{
    public const string User = "tester";
    public const string Password = "s3cret-pass";

    private RegistryServer? _open;
    private RegistryServer? _auth;

    public RegistryServer Open => _open ?? throw new SkipException($"needs {RegistryServer.Binary} (Debian package docker-registry)");
    public RegistryServer Auth => _auth ?? throw new SkipException($"needs {RegistryServer.Binary} (Debian package docker-registry)");

    public async Task InitializeAsync()
    {
        if (!File.Exists(RegistryServer.Binary))
        {
            return;
        }

        _open = await RegistryServer.StartAsync();
        _auth = await RegistryServer.StartAsync((User, Password));
    }

    public async Task DisposeAsync()
    {
        if (_open is not null)
        {
            await _open.DisposeAsync();
        }

        if (_auth is not null)
        {
            await _auth.DisposeAsync();
        }
    }
}

/// <summary>Images made for the registry tests, and ways to look at what a pull left in containerd.</summary>
public static class RegistryTestSupport
{
    /// <summary>A layer holding one file of <paramref name="size"/> pseudo-random (incompressible) bytes, seeded for repeatability.</summary>
    public static TestImages.Layer RandomLayer(LayerCompression compression, string fileName, int size, int seed)
    {
        var data = new byte[size];
        new Random(seed).NextBytes(data);
        var tar = new MemoryStream();
        using (var writer = new TarWriter(tar, TarEntryFormat.Pax, leaveOpen: true))
        {
            writer.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, fileName)
            {
                ModificationTime = DateTimeOffset.FromUnixTimeSeconds(1_700_000_000),
                Mode = (UnixFileMode)0b110_100_100,
                DataStream = new MemoryStream(data),
            });
        }

        var tarBytes = tar.ToArray();
        var blob = compression switch
        {
            LayerCompression.None => tarBytes,
            LayerCompression.Gzip => TestImages.Gzip(tarBytes),
            LayerCompression.Zstd => new ZstdSharp.Compressor(3).Wrap(tarBytes).ToArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(compression)),
        };
        return new TestImages.Layer(blob, OciDigest.Compute(blob), OciDigest.Compute(tarBytes), MediaTypes.OciLayerFor(compression), tarBytes);
    }

    /// <summary>Three layers of about <paramref name="layerSize"/> bytes each: uncompressed, gzip, zstd.</summary>
    public static TestImages.Layer[] ThreeLayers(int layerSize, int seed) =>
    [
        RandomLayer(LayerCompression.None, "plain.bin", layerSize, seed),
        RandomLayer(LayerCompression.Gzip, "gzip.bin", layerSize, seed + 1),
        RandomLayer(LayerCompression.Zstd, "zstd.bin", layerSize, seed + 2),
    ];

    /// <summary>Imports an image of <paramref name="layers"/> named <paramref name="name"/> into containerd (through an OCI archive).</summary>
    public static async Task<ImportedImage> ImportAsync(ContainerdClient client, TempDir dir, string name, IReadOnlyList<TestImages.Layer> layers)
    {
        var layout = new TestImages.Layout();
        var (manifest, _) = layout.AddImage(layers);
        layout.IndexManifests.Add(manifest with { Annotations = new Dictionary<string, string> { ["org.opencontainers.image.ref.name"] = name } });
        var path = dir.File(Guid.NewGuid().ToString("N")[..8] + ".tar");
        layout.Write(path);
        var imported = Assert.Single(await new ImageImporter(client).ImportAsync(path));
        File.Delete(path);
        return imported;
    }

    /// <summary>Deletes the image record and collects garbage synchronously: its blobs and snapshots are gone on return.</summary>
    public static async Task RemoveImageAsync(ContainerdClient client, string name)
    {
        await client.Images.DeleteAsync(name, sync: true);
        var lease = await client.Leases.CreateAsync();
        await client.Leases.DeleteAsync(lease.Id, sync: true);
    }

    public sealed record StoreState(List<string> Content, List<string> Snapshots, List<string> Images, List<string> Leases);

    public static async Task<StoreState> StateAsync(ContainerdClient client)
    {
        var content = (await client.Content.ListAsync()).Select(c => $"{c.Digest} {string.Join(',', c.Labels.OrderBy(kv => kv.Key).Select(kv => kv.Key + "=" + kv.Value))}").Order().ToList();
        var snapshots = (await client.Snapshots.ListAsync()).Select(s => $"{s.Name} {s.Kind} parent={s.Parent}").Order().ToList();
        var images = (await client.Images.ListAsync()).Select(i => $"{i.Name} {i.Target.Digest} {i.UpdatedAt}").Order().ToList();
        var leases = (await client.Leases.ListAsync()).Select(l => l.Id).ToList();
        return new StoreState(content, snapshots, images, leases);
    }

    /// <summary>Reads files (or, with probeOnly, says "yes"/"no" for their existence) through a read-only view of a committed snapshot.</summary>
    public static async Task<List<string>> ReadThroughViewAsync(ContainerdClient client, TempDir dir, string chainId, string[] files, bool probeOnly = false)
    {
        var key = "test-view-" + Guid.NewGuid().ToString("N")[..8];
        var target = Directory.CreateDirectory(dir.File(key)).FullName;
        // a snapshot nothing references is garbage: hold the view under a lease, as a container would be
        var lease = await client.Leases.CreateAsync(expiresAfter: TimeSpan.FromMinutes(10));
        using var leased = client.WithLease(lease.Id);
        var mounts = await leased.Snapshots.ViewAsync(key, chainId);
        try
        {
            var mount = Assert.Single(mounts);
            var options = string.Join(',', mount.Options);
            await RunAsync("mount", mount.Type == "bind" ? ["-o", options, mount.Source, target] : ["-t", mount.Type, "-o", options, mount.Source, target]);
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
                await RunAsync("umount", [target]);
            }
        }
        finally
        {
            await client.Snapshots.RemoveAsync(key);
            await client.Leases.DeleteAsync(lease.Id);
        }
    }

    /// <summary>SHA-256 of a file inside a committed snapshot, read through a view.</summary>
    public static async Task<string> HashThroughViewAsync(ContainerdClient client, TempDir dir, string chainId, string file)
    {
        var key = "test-view-" + Guid.NewGuid().ToString("N")[..8];
        var target = Directory.CreateDirectory(dir.File(key)).FullName;
        var lease = await client.Leases.CreateAsync(expiresAfter: TimeSpan.FromMinutes(10));
        using var leased = client.WithLease(lease.Id);
        var mounts = await leased.Snapshots.ViewAsync(key, chainId);
        try
        {
            var mount = Assert.Single(mounts);
            var options = string.Join(',', mount.Options);
            await RunAsync("mount", mount.Type == "bind" ? ["-o", options, mount.Source, target] : ["-t", mount.Type, "-o", options, mount.Source, target]);
            try
            {
                await using var stream = File.OpenRead(Path.Combine(target, file));
                return await OciDigest.ComputeAsync(stream, CancellationToken.None);
            }
            finally
            {
                await RunAsync("umount", [target]);
            }
        }
        finally
        {
            await client.Snapshots.RemoveAsync(key);
            await client.Leases.DeleteAsync(lease.Id);
        }
    }

    private static async Task RunAsync(string program, string[] args)
    {
        var start = new ProcessStartInfo(program, args) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', args)}: {await stderr}");
    }

    /// <summary>Collects progress events synchronously (Progress&lt;T&gt; would post them to the thread pool, out of order).</summary>
    public sealed class Recorder<T> : IProgress<T>
    {
        private readonly List<(TimeSpan At, T Event)> _events = [];
        private readonly Stopwatch _clock = Stopwatch.StartNew();

        public Action<T>? OnEvent { get; init; }

        public IReadOnlyList<(TimeSpan At, T Event)> Events
        {
            get
            {
                lock (_events)
                {
                    return _events.ToList();
                }
            }
        }

        public void Report(T value)
        {
            lock (_events)
            {
                _events.Add((_clock.Elapsed, value));
            }

            OnEvent?.Invoke(value);
        }
    }

    public static RegistryClient OpenClient(RegistryOptions? options = null) => new(options ?? new RegistryOptions());

    /// <summary>Asserts a pull left nothing at all behind: no image, lease, snapshot, blob or ingest.</summary>
    public static async Task AssertNothingLeftAsync(ContainerdClient client, string socket, IEnumerable<string> digests)
    {
        var state = await StateAsync(client);
        Assert.Empty(state.Images);
        Assert.Empty(state.Leases);
        Assert.Empty(state.Snapshots);
        Assert.Empty(state.Content);
        foreach (var digest in digests)
        {
            Assert.Null(await client.Content.StatusAsync(ImagePuller.IngestRef(digest)));
        }

        var census = await LeakCensus.TakeAsync(client, socket);
        Assert.True(census.IsClean, census.ToString());
    }
}
