using System.Formats.Tar;
using System.Text;
using KataAgent.Oci;

namespace KataAgent.Images.Tests;

public sealed class LayerWriterTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A small tree with every kind of entry the writer handles.</summary>
    private async Task<string> MakeTreeAsync()
    {
        var root = Directory.CreateDirectory(_dir.File("tree")).FullName;
        Directory.CreateDirectory(Path.Combine(root, "usr/bin"));
        Directory.CreateDirectory(Path.Combine(root, "empty"));
        File.WriteAllText(Path.Combine(root, "usr/bin/tool"), "#!/bin/sh\necho tool\n");
        File.SetUnixFileMode(Path.Combine(root, "usr/bin/tool"), (UnixFileMode)0b100_111_101_101); // 04755
        File.WriteAllText(Path.Combine(root, "b.txt"), "bee");
        File.WriteAllText(Path.Combine(root, "a.txt"), "ay");
        File.SetUnixFileMode(Path.Combine(root, "a.txt"), (UnixFileMode)0b110_100_000); // 0640
        File.CreateSymbolicLink(Path.Combine(root, "usr/bin/alias"), "tool");
        File.CreateSymbolicLink(Path.Combine(root, "bin"), "usr/bin");
        await RunAsync("ln", Path.Combine(root, "usr/bin/tool"), Path.Combine(root, "usr/bin/tool-hard"));
        var tmp = Directory.CreateDirectory(Path.Combine(root, "tmp")).FullName;
        File.SetUnixFileMode(tmp, (UnixFileMode)0b1_111_111_111); // 1777
        await RunAsync("mkfifo", Path.Combine(root, "fifo"));
        return root;
    }

    private static async Task RunAsync(string program, params string[] args)
    {
        using var process = System.Diagnostics.Process.Start(program, args);
        await process.WaitForExitAsync();
        Assert.Equal(0, process.ExitCode);
    }

    [Fact]
    public async Task Tree_IsPackedWithTypesModesLinksInOrdinalOrder()
    {
        var root = await MakeTreeAsync();
        var output = new MemoryStream();
        var info = await RootfsLayerWriter.WriteAsync(root, output, new LayerWriterOptions { Compression = LayerCompression.Gzip });

        Assert.Equal(MediaTypes.OciLayerGzip, info.Descriptor.MediaType);
        Assert.Equal(output.Length, info.Descriptor.Size);
        Assert.Equal(OciDigest.Compute(output.ToArray()), info.Descriptor.Digest);

        output.Position = 0;
        var entries = await TestImages.ReadLayerAsync(output, LayerCompression.Gzip);
        var names = entries.Select(e => e.Entry.Name).ToList();
        Assert.Equal(
            ["a.txt", "b.txt", "bin", "empty/", "fifo", "tmp/", "usr/", "usr/bin/", "usr/bin/alias", "usr/bin/tool", "usr/bin/tool-hard"],
            names);
        Assert.Equal(info.EntryCount, names.Count);

        TarEntry Entry(string name) => entries.Single(e => e.Entry.Name == name).Entry;
        Assert.Equal(TarEntryType.SymbolicLink, Entry("bin").EntryType);
        Assert.Equal("usr/bin", Entry("bin").LinkName);
        Assert.Equal("tool", Entry("usr/bin/alias").LinkName);
        Assert.Equal(TarEntryType.RegularFile, Entry("usr/bin/tool").EntryType);
        Assert.Equal(TarEntryType.HardLink, Entry("usr/bin/tool-hard").EntryType);
        Assert.Equal("usr/bin/tool", Entry("usr/bin/tool-hard").LinkName);
        Assert.Equal(TarEntryType.Fifo, Entry("fifo").EntryType);
        Assert.Equal((UnixFileMode)0b100_111_101_101, Entry("usr/bin/tool").Mode);
        Assert.Equal((UnixFileMode)0b110_100_000, Entry("a.txt").Mode);
        Assert.Equal((UnixFileMode)0b1_111_111_111, Entry("tmp/").Mode);
        Assert.Equal(TarEntryType.Directory, Entry("empty/").EntryType);
        Assert.Equal("ay", Encoding.UTF8.GetString(entries.Single(e => e.Entry.Name == "a.txt").Data!));
        Assert.All(entries, e => Assert.Equal("", e.Entry is PosixTarEntry p ? p.UserName : ""));
        if (Environment.IsPrivilegedProcess)
        {
            Assert.All(entries, e => Assert.Equal((0, 0), (e.Entry.Uid, e.Entry.Gid))); // the files' own owner: root
        }
    }

    [Fact]
    public async Task SameTree_GivesTheSameDigest_AndCompressionDoesNotChangeTheDiffId()
    {
        var root = await MakeTreeAsync();
        var first = await RootfsLayerWriter.WriteAsync(root, new MemoryStream());
        await Task.Delay(1100); // a writer that put "now" anywhere would differ by now
        File.ReadAllText(Path.Combine(root, "a.txt")); // touches atime only
        var second = await RootfsLayerWriter.WriteAsync(root, new MemoryStream());
        Assert.Equal(first.Descriptor.Digest, second.Descriptor.Digest);

        var plain = new MemoryStream();
        var none = await RootfsLayerWriter.WriteAsync(root, plain, new LayerWriterOptions { Compression = LayerCompression.None });
        var zstd = await RootfsLayerWriter.WriteAsync(root, new MemoryStream(), new LayerWriterOptions { Compression = LayerCompression.Zstd });
        Assert.Equal(first.DiffId, none.DiffId);
        Assert.Equal(first.DiffId, zstd.DiffId);
        Assert.Equal(none.DiffId, none.Descriptor.Digest);
        Assert.Equal(OciDigest.Compute(plain.ToArray()), none.DiffId);
        Assert.Equal(MediaTypes.OciLayerZstd, zstd.Descriptor.MediaType);

        File.WriteAllText(Path.Combine(root, "b.txt"), "changed");
        var third = await RootfsLayerWriter.WriteAsync(root, new MemoryStream());
        Assert.NotEqual(first.DiffId, third.DiffId);
    }

    [Fact]
    public async Task ClampAndOwnerOverride_AreApplied()
    {
        var root = await MakeTreeAsync();
        var epoch = new DateTimeOffset(2020, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var output = new MemoryStream();
        await RootfsLayerWriter.WriteAsync(root, output, new LayerWriterOptions
        {
            Compression = LayerCompression.None,
            ClampModificationTime = epoch,
            Owner = (1234, 5678),
        });
        output.Position = 0;
        var entries = await TestImages.ReadLayerAsync(output, LayerCompression.None);
        Assert.All(entries, e => Assert.Equal(epoch, e.Entry.ModificationTime));
        Assert.All(entries, e => Assert.Equal((1234, 5678), (e.Entry.Uid, e.Entry.Gid)));
    }

    [Fact]
    public async Task LayoutWriterOutput_IsReadBackByTheArchiveReader()
    {
        var root = await MakeTreeAsync();
        var layerFile = _dir.File("layer.tar.zst");
        var info = await RootfsLayerWriter.WriteFileAsync(root, layerFile, new LayerWriterOptions { Compression = LayerCompression.Zstd });
        var config = new ImageConfig
        {
            Architecture = "amd64",
            Os = "linux",
            Config = new ImageRuntimeConfig { Cmd = ["/bin/sh"], Labels = new() { ["z"] = "1", ["a"] = "2" } },
        };
        var path = _dir.File("layout.tar");
        var result = await OciLayoutWriter.WriteFileAsync(path, config, [LayerBlob.FromInfo(info, layerFile)], "kata-agent/test:1");
        Assert.Null(config.Rootfs); // the caller's config is not modified

        await using var archive = await OciArchive.OpenAsync(path);
        var image = archive.SingleImage;
        Assert.Equal("kata-agent/test:1", image.Name);
        Assert.Equal(result.Manifest.Digest, image.ManifestDescriptor.Digest);
        Assert.Equal([info.DiffId], image.DiffIds);
        Assert.Equal(info.Descriptor.Digest, Assert.Single(image.Layers).Digest);
        Assert.Equal(["a", "z"], image.Config.Labels.Keys);
        await archive.VerifyAsync();

        // and the same inputs give a byte-identical archive
        var again = _dir.File("layout2.tar");
        await OciLayoutWriter.WriteFileAsync(again, config, [LayerBlob.FromInfo(info, layerFile)], "kata-agent/test:1");
        Assert.Equal(await File.ReadAllBytesAsync(path), await File.ReadAllBytesAsync(again));
        Assert.Equal(2, Directory.GetFiles(_dir.Path, "layout*.tar").Length); // no temp files left
    }

    [SkippableFact]
    public async Task MountsInsideTheTree_AreNotDescended_AndDeleteTreeUnmountsThem()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "mounting a tmpfs needs root");
        var root = await MakeTreeAsync();
        var mountPoint = Directory.CreateDirectory(Path.Combine(root, "proc")).FullName;
        await RunAsync("mount", "-t", "tmpfs", "tmpfs", mountPoint);
        File.WriteAllText(Path.Combine(mountPoint, "inside-the-mount"), "x");

        var output = new MemoryStream();
        await RootfsLayerWriter.WriteAsync(root, output, new LayerWriterOptions { Compression = LayerCompression.None });
        output.Position = 0;
        var names = (await TestImages.ReadLayerAsync(output, LayerCompression.None)).Select(e => e.Entry.Name).ToList();
        Assert.Contains("proc/", names);
        Assert.DoesNotContain("proc/inside-the-mount", names);

        Assert.Single(NativeFs.MountsBelow(root));
        NativeFs.DeleteTree(root);
        Assert.False(Directory.Exists(root));
        Assert.Empty(NativeFs.MountsBelow(root));
    }
}
