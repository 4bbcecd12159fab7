using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using KataAgent.Testing;

namespace KataAgent.Images.Tests;

/// <summary>
/// Gzip bombs against a real private containerd: a ~20 MB archive whose layer (or whole archive) expands to 20 GiB of
/// zeros is refused once the expansion passes the cap, and leaves nothing behind: no image, lease, snapshot, content,
/// ingest or temp file, and no more than a few MiB of the host's disk used meanwhile.
/// </summary>
public sealed class ExpansionLimitTests : ContainerdNamespaceTests, IClassFixture<ContainerdFixture>
{
    internal const long BombBytes = 20L << 30;
    private const long Cap = 256L << 20;


    public ExpansionLimitTests(ContainerdFixture containerd) : base(containerd, "bomb")
    {
    }

    [Fact]
    public async Task A_layer_that_expands_past_the_cap_is_refused_before_unpacking_and_leaves_nothing()
    {
        var blob = GzipBomb(TarHeader("zeros", BombBytes));
        var bomb = new TestImages.Layer(blob, OciDigest.Compute(blob), OciDigest.Compute(Encoding.UTF8.GetBytes("unknowable without 20 GiB")),
            MediaTypes.OciLayerGzip, []);
        var layout = new TestImages.Layout();
        layout.IndexManifests.Add(layout.AddImage([TestImages.MakeLayer(LayerCompression.Gzip, ("ok.txt", "ok")), bomb]).Manifest
            with { Annotations = new Dictionary<string, string> { ["org.opencontainers.image.ref.name"] = "test/bomb:1" } });
        var path = Dir.File("bomb.tar");
        layout.Write(path);
        Assert.InRange(new FileInfo(path).Length, 1, 64L << 20);
        var temp = Directory.CreateDirectory(Dir.File("temp")).FullName;

        var e = await Assert.ThrowsAsync<ExpansionLimitException>(() =>
            new ImageImporter(Client).ImportAsync(path, new ImportOptions { MaxExpandedBytes = Cap, TempDirectory = temp }));
        Assert.Contains($"importing test/bomb:1: the layers expand to more than {Cap} bytes", e.Message, StringComparison.Ordinal);
        Assert.Contains("layer 1", e.Message, StringComparison.Ordinal);
        Assert.Contains(bomb.Digest, e.Message, StringComparison.Ordinal);

        await AssertNothingLeftAsync(temp);
    }

    [Fact]
    public async Task A_compressed_archive_that_expands_past_the_cap_is_refused_and_its_temp_file_goes()
    {
        // The archive itself is the bomb: a tar.gz whose first entry is 20 GiB of zeros.
        var path = Dir.File("bomb.tar.gz");
        await File.WriteAllBytesAsync(path, GzipBomb(TarHeader("blobs/sha256/zeros", BombBytes)));
        var temp = Directory.CreateDirectory(Dir.File("temp")).FullName;
        var freeBefore = new DriveInfo(temp).AvailableFreeSpace;

        var e = await Assert.ThrowsAsync<ExpansionLimitException>(() =>
            new ImageImporter(Client).ImportAsync(path, new ImportOptions { MaxExpandedBytes = Cap, TempDirectory = temp }));
        Assert.Contains($"expands to more than {Cap} bytes", e.Message, StringComparison.Ordinal);
        // Other processes share the disk: only a gross change (the bomb's 20 GiB) would say the cap failed.
        Assert.True(new DriveInfo(temp).AvailableFreeSpace > freeBefore - (4L << 30), "the decompression ate the disk");

        await AssertNothingLeftAsync(temp);
    }

    [Fact]
    public async Task An_image_under_the_cap_imports()
    {
        var layer = TestImages.MakeLayer(LayerCompression.Gzip, ("ok.txt", new string('x', 10_000)));
        var layout = new TestImages.Layout();
        layout.IndexManifests.Add(layout.AddImage([layer]).Manifest
            with { Annotations = new Dictionary<string, string> { ["org.opencontainers.image.ref.name"] = "test/small:1" } });
        var path = Dir.File("small.tar");
        layout.Write(path);

        var imported = await new ImageImporter(Client).ImportAsync(path, new ImportOptions { MaxExpandedBytes = layer.Tar.Length });
        Assert.Equal("test/small:1", imported.Single().Name);
        var refused = await Assert.ThrowsAsync<ExpansionLimitException>(() =>
            new ImageImporter(Client).ImportAsync(path, new ImportOptions { Name = "test/small:2", MaxExpandedBytes = layer.Tar.Length - 1 }));
        Assert.Contains($"more than {layer.Tar.Length - 1} bytes", refused.Message, StringComparison.Ordinal);
    }

    private async Task AssertNothingLeftAsync(string temp)
    {
        Assert.Empty(await Client.Images.ListAsync());
        Assert.Empty(await Client.Leases.ListAsync());
        Assert.Empty(await Client.Snapshots.ListAsync());
        Assert.Empty(await Client.Content.ListAsync());
        Assert.Empty(Directory.GetFileSystemEntries(temp));
    }

    /// <summary>A ustar header for one regular file of <paramref name="size"/> bytes (size in GNU base-256: it passes 8 GiB).</summary>
    internal static byte[] TarHeader(string name, long size)
    {
        var header = new byte[512];
        Encoding.ASCII.GetBytes(name).CopyTo(header, 0);
        Encoding.ASCII.GetBytes("0000644\0").CopyTo(header, 100);
        Encoding.ASCII.GetBytes("0000000\0").CopyTo(header, 108);
        Encoding.ASCII.GetBytes("0000000\0").CopyTo(header, 116);
        header[124] = 0x80;
        BinaryPrimitives.WriteInt64BigEndian(header.AsSpan(128, 8), size);
        Encoding.ASCII.GetBytes("14000000000\0").CopyTo(header, 136);
        header[156] = (byte)'0';
        Encoding.ASCII.GetBytes("ustar\0" + "00").CopyTo(header, 257);
        "        "u8.CopyTo(header.AsSpan(148));
        var sum = header.Sum(b => (int)b);
        Encoding.ASCII.GetBytes(Convert.ToString(sum, 8).PadLeft(6, '0') + "\0 ").CopyTo(header, 148);
        return header;
    }

    /// <summary>
    /// <paramref name="prefix"/> then <see cref="BombBytes"/> zeros, gzip-compressed without ever holding them: one compressed
    /// 64 MiB member of zeros repeated (a multi-member gzip stream is one stream to a reader).
    /// </summary>
    internal static byte[] GzipBomb(byte[] prefix)
    {
        const int chunk = 64 << 20;
        var zeros = new MemoryStream();
        using (var gzip = new GZipStream(zeros, CompressionLevel.SmallestSize, leaveOpen: true))
            gzip.Write(new byte[chunk]);
        var member = zeros.ToArray();
        var output = new MemoryStream();
        output.Write(TestImages.Gzip(prefix));
        for (long written = 0; written < BombBytes; written += chunk)
            output.Write(member);
        return output.ToArray();
    }
}
