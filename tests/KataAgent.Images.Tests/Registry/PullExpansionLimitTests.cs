using KataAgent.Containerd;
using KataAgent.Images.Registry;
using KataAgent.Testing;
using static KataAgent.Images.Tests.Registry.RegistryTestSupport;

namespace KataAgent.Images.Tests.Registry;

/// <summary>
/// A gzip bomb pulled from Debian's docker-registry on 127.0.0.1: the layer (about 20 MB) expands to 20 GiB; the pull
/// fetches it, measures the expansion from the content store before unpacking, refuses it at the cap and rolls back.
/// </summary>
public sealed class PullExpansionLimitTests : IClassFixture<ContainerdFixture>, IClassFixture<RegistryFixture>, IAsyncLifetime, IDisposable
{
    private const long Cap = 256L << 20;
    private readonly ContainerdFixture _containerd;
    private readonly RegistryFixture _registries;
    private readonly TempDir _dir = new();
    private ContainerdClient _client = null!;

    public PullExpansionLimitTests(ContainerdFixture containerd, RegistryFixture registries)
    {
        _containerd = containerd;
        _registries = registries;
    }

    public async Task InitializeAsync()
    {
        var ns = "pullbomb-" + Guid.NewGuid().ToString("N")[..10];
        _client = _containerd.Client.WithNamespace(ns);
        await _client.Namespaces.EnsureAsync(ns);
    }

    public Task DisposeAsync()
    {
        _client.Dispose();
        return Task.CompletedTask;
    }

    public void Dispose() => _dir.Dispose();

    [SkippableFact]
    public async Task A_pulled_layer_that_expands_past_the_cap_is_refused_before_unpacking_and_the_pull_leaves_nothing()
    {
        using var registry = OpenClient();
        var blob = ExpansionLimitTests.GzipBomb(ExpansionLimitTests.TarHeader("zeros", ExpansionLimitTests.BombBytes));
        var bomb = new TestImages.Layer(blob, OciDigest.Compute(blob), OciDigest.Compute("unknowable without 20 GiB"u8.ToArray()), MediaTypes.OciLayerGzip, []);
        var layout = new TestImages.Layout();
        var (manifest, _) = layout.AddImage([bomb]);
        layout.IndexManifests.Add(manifest with { Annotations = new Dictionary<string, string> { ["org.opencontainers.image.ref.name"] = "local/bomb:1" } });
        var path = _dir.File("bomb.tar");
        layout.Write(path);
        // Content only: the bomb never expands here.
        await new ImageImporter(_client).ImportAsync(path, new ImportOptions { Unpack = false });
        var reference = ImageReference.Parse($"{_registries.Open.Host}/test/bomb{Guid.NewGuid().ToString("N")[..8]}:v1");
        await new ImagePusher(_client, registry).PushAsync("local/bomb:1", reference);
        await RemoveImageAsync(_client, "local/bomb:1");
        Assert.Empty((await StateAsync(_client)).Content);

        var e = await Assert.ThrowsAsync<ExpansionLimitException>(() =>
            new ImagePuller(_client, registry).PullAsync(reference, new PullOptions { MaxExpandedBytes = Cap }));
        Assert.Contains($"pulling {reference}: the layers expand to more than {Cap} bytes", e.Message, StringComparison.Ordinal);
        Assert.Contains(bomb.Digest, e.Message, StringComparison.Ordinal);

        await AssertNothingLeftAsync(_client, _containerd.Containerd.SocketPath, [bomb.Digest]);
    }
}
