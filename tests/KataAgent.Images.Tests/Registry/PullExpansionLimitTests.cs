using KataAgent.Images.Registry;
using KataAgent.Testing;
using static KataAgent.Images.Tests.Registry.RegistryTestSupport;

namespace KataAgent.Images.Tests.Registry;

/// <summary>
/// A gzip bomb pulled from Debian's docker-registry on 127.0.0.1: the layer (about 20 MB) expands to 20 GiB; the pull
/// fetches it, measures the expansion from the content store before unpacking, refuses it at the cap and rolls back.
/// </summary>
public sealed class PullExpansionLimitTests : ContainerdNamespaceTests, IClassFixture<ContainerdFixture>, IClassFixture<RegistryFixture>
{
    private const long Cap = 256L << 20;
    private readonly RegistryFixture _registries;

    public PullExpansionLimitTests(ContainerdFixture containerd, RegistryFixture registries) : base(containerd, "pullbomb")
    {
        _registries = registries;
    }

    [SkippableFact]
    public async Task A_pulled_layer_that_expands_past_the_cap_is_refused_before_unpacking_and_the_pull_leaves_nothing()
    {
        using var registry = OpenClient();
        var blob = ExpansionLimitTests.GzipBomb(ExpansionLimitTests.TarHeader("zeros", ExpansionLimitTests.BombBytes));
        var bomb = new TestImages.Layer(blob, OciDigest.Compute(blob), OciDigest.Compute("unknowable without 20 GiB"u8.ToArray()), MediaTypes.OciLayerGzip, []);
        var layout = new TestImages.Layout();
        var (manifest, _) = layout.AddImage([bomb]);
        layout.IndexManifests.Add(manifest with { Annotations = new Dictionary<string, string> { ["org.opencontainers.image.ref.name"] = "local/bomb:1" } });
        var path = Dir.File("bomb.tar");
        layout.Write(path);
        // Content only: the bomb never expands here.
        await new ImageImporter(Client).ImportAsync(path, new ImportOptions { Unpack = false });
        var reference = ImageReference.Parse($"{_registries.Open.Host}/test/bomb{Guid.NewGuid().ToString("N")[..8]}:v1");
        await new ImagePusher(Client, registry).PushAsync("local/bomb:1", reference);
        await RemoveImageAsync(Client, "local/bomb:1");
        Assert.Empty((await StateAsync(Client)).Content);

        var e = await Assert.ThrowsAsync<ExpansionLimitException>(() =>
            new ImagePuller(Client, registry).PullAsync(reference, new PullOptions { MaxExpandedBytes = Cap }));
        Assert.Contains($"pulling {reference}: the layers expand to more than {Cap} bytes", e.Message, StringComparison.Ordinal);
        Assert.Contains(bomb.Digest, e.Message, StringComparison.Ordinal);

        await AssertNothingLeftAsync(Client, Containerd.Containerd.SocketPath, [bomb.Digest]);
    }
}
