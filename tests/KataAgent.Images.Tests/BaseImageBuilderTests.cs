using System.Diagnostics;
using System.Formats.Tar;
using System.Text;

namespace KataAgent.Images.Tests;

public sealed class BusyboxImageTests : IDisposable
{
    private readonly TempDir _cache = new();

    public void Dispose() => _cache.Dispose();

    private static void SkipWithoutBusybox()
        => Skip.IfNot(File.Exists("/bin/busybox"), "needs /bin/busybox (Debian package busybox-static)");

    [SkippableFact]
    public async Task Busybox_IsBuiltReproducibly_AndCached()
    {
        SkipWithoutBusybox();
        var builder = new BaseImageBuilder(_cache.Path);

        var first = await builder.BuildBusyboxAsync();
        Assert.False(first.FromCache);
        Assert.Equal("kata-agent/busybox:latest", first.Name);
        Assert.Equal(await builder.CachePathForAsync(new BusyboxImageSpec()), first.ArchivePath);

        var second = await builder.BuildBusyboxAsync();
        Assert.True(second.FromCache);
        Assert.Equal(first.Manifest.Digest, second.Manifest.Digest);

        using var otherCache = new TempDir();
        var rebuilt = await new BaseImageBuilder(otherCache.Path).BuildBusyboxAsync();
        Assert.False(rebuilt.FromCache);
        Assert.Equal(first.Manifest.Digest, rebuilt.Manifest.Digest); // same busybox binary, same image

        Assert.Empty(Directory.GetDirectories(_cache.Path, ".build-*"));
        Assert.Empty(Directory.GetFiles(_cache.Path, "*.tmp"));
    }

    [SkippableFact]
    public async Task Busybox_RootfsHasTheShellAppletsAndConfig()
    {
        SkipWithoutBusybox();
        var built = await new BaseImageBuilder(_cache.Path).BuildBusyboxAsync();
        await using var archive = await OciArchive.OpenAsync(built.ArchivePath);
        var image = archive.SingleImage;
        Assert.Equal(["/bin/sh"], image.Config.Config!.Cmd);
        Assert.Equal("/home/work", image.Config.Config.WorkingDir);
        Assert.Equal("linux", image.Config.Os);

        await using var blob = archive.OpenBlob(Assert.Single(image.Layers));
        var entries = (await TestImages.ReadLayerAsync(blob, LayerCompression.Gzip)).ToDictionary(e => e.Entry.Name, e => e);
        var busybox = entries["bin/busybox"].Entry;
        Assert.Equal(TarEntryType.RegularFile, busybox.EntryType);
        Assert.Equal((UnixFileMode)0b111_101_101, busybox.Mode);
        Assert.Equal(await File.ReadAllBytesAsync("/bin/busybox"), entries["bin/busybox"].Data);
        Assert.Equal(TarEntryType.SymbolicLink, entries["bin/sh"].Entry.EntryType);
        Assert.Equal("/bin/busybox", entries["bin/sh"].Entry.LinkName);
        Assert.Equal((UnixFileMode)0b1_111_111_111, entries["tmp/"].Entry.Mode);
        Assert.True(entries.ContainsKey("home/work/"));
        Assert.StartsWith("root:x:0:0:", Encoding.UTF8.GetString(entries["etc/passwd"].Data!), StringComparison.Ordinal);
        Assert.All(entries.Values, e => Assert.Equal((0, 0), (e.Entry.Uid, e.Entry.Gid)));
    }

    [Fact]
    public async Task Busybox_Missing_FailsNamingThePackage()
    {
        var builder = new BaseImageBuilder(_cache.Path);
        var e = await Assert.ThrowsAsync<ImageBuildException>(() => builder.BuildBusyboxAsync(new BusyboxImageSpec { BusyboxPath = "/nonexistent/busybox" }));
        Assert.Contains("busybox-static", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Busybox_DynamicallyLinked_IsRefused_AndNothingIsLeftBehind()
    {
        var builder = new BaseImageBuilder(_cache.Path);
        var e = await Assert.ThrowsAsync<ImageBuildException>(() => builder.BuildBusyboxAsync(new BusyboxImageSpec { BusyboxPath = "/bin/ls" }));
        Assert.Contains("statically linked", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetDirectories(_cache.Path, ".build-*"));
        Assert.Empty(Directory.GetFiles(_cache.Path, "*.oci.tar"));
        Assert.Empty(Directory.GetFiles(_cache.Path, "*.tmp"));
    }
}

/// <summary>
/// Tests that run the real debootstrap against the host's configured Debian mirror (Category=Debootstrap). The first
/// build takes about 40-60 s; the image is cached in <see cref="BaseImageBuilder.DefaultCacheDirectory"/>, so later
/// runs (and other test projects using the same image) are fast.
/// </summary>
[Trait("Category", "Debootstrap")]
public sealed class PythonImageTests : IDisposable
{
    private readonly TempDir _scratch = new("/var/tmp");

    public void Dispose() => _scratch.Dispose();

    private static void SkipUnlessDebootstrapPossible()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "debootstrap needs root");
        Skip.IfNot(File.Exists("/usr/sbin/debootstrap"), "needs debootstrap (apt-get install debootstrap)");
    }

    [SkippableFact]
    public async Task Python_RealDebootstrap_ProducesARunnableCachedImage()
    {
        SkipUnlessDebootstrapPossible();
        var builder = new BaseImageBuilder();
        var built = await builder.BuildPythonAsync();
        Assert.Equal("kata-agent/python:3-bookworm", built.Name);

        var again = await builder.BuildPythonAsync();
        Assert.True(again.FromCache);
        Assert.Equal(built.Manifest.Digest, again.Manifest.Digest);
        Assert.True(again.Elapsed < TimeSpan.FromSeconds(10), $"a cached build took {again.Elapsed}");
        Assert.Empty(Directory.GetDirectories(builder.CacheDirectory, ".build-*"));

        await using var archive = await OciArchive.OpenAsync(built.ArchivePath);
        var image = archive.SingleImage;
        var labels = image.Config.Labels;
        Assert.Equal("1", labels["ai.backend.kernelspec"]);
        Assert.Equal("python", labels["ai.backend.runtime-type"]);
        Assert.Equal("/usr/bin/python3", labels["ai.backend.runtime-path"]);
        Assert.Equal("query batch uid-match user-input", labels["ai.backend.features"]);
        Assert.Equal("debian12", labels["ai.backend.base-distro"]);
        Assert.Equal("/home/work", image.Config.Config!.WorkingDir);
        Assert.Contains(image.Config.Config.Env!, e => e.StartsWith("PATH=", StringComparison.Ordinal));
        Assert.Equal(MediaTypes.OciLayerGzip, Assert.Single(image.Layers).MediaType);

        // unpack the layer with tar (as root it keeps owners and modes) and run python in it
        var rootfs = Directory.CreateDirectory(Path.Combine(_scratch.Path, "rootfs")).FullName;
        var layerFile = Path.Combine(_scratch.Path, "layer.tar.gz");
        await using (var blob = archive.OpenBlob(image.Layers[0]))
        await using (var file = File.Create(layerFile))
        {
            await blob.CopyToAsync(file);
        }

        await RunAsync("tar", "--numeric-owner", "-xpzf", layerFile, "-C", rootfs);

        Assert.True(File.Exists(Path.Combine(rootfs, "usr/bin/python3")));
        Assert.True(Directory.Exists(Path.Combine(rootfs, "home/work")));
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(rootfs, "usr/share/doc")));
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(rootfs, "var/lib/apt/lists")));
        Assert.Equal("", await File.ReadAllTextAsync(Path.Combine(rootfs, "etc/resolv.conf")));

        // The kernel runner's driver and the service test need the standard library beyond python3-minimal.
        var python = await RunAsync("chroot", rootfs, "/usr/bin/python3", "-c",
            "import sys, os, json, rlcompleter, getpass, http.server; print(sys.version_info[0], os.getcwd())");
        Assert.Equal("3 /", python.Trim());
    }

    [SkippableFact]
    public async Task Python_DebootstrapFailure_CarriesItsOutput_AndLeavesNothing()
    {
        SkipUnlessDebootstrapPossible();
        var builder = new BaseImageBuilder(_scratch.Path);
        var e = await Assert.ThrowsAsync<ImageBuildException>(() => builder.BuildPythonAsync(new PythonImageSpec
        {
            Suite = "no-such-suite",
            Mirror = "http://127.0.0.1:9/debian",
        }));
        Assert.Contains("exit code", e.Message, StringComparison.Ordinal);
        Assert.NotNull(e.Output);
        Assert.Contains("no-such-suite", e.Output, StringComparison.Ordinal);
        Assert.Empty(Directory.GetDirectories(_scratch.Path, ".build-*"));
        Assert.Empty(Directory.GetFiles(_scratch.Path, "*.oci.tar"));
        Assert.Empty(Directory.GetFiles(_scratch.Path, "*.tmp"));
    }

    [SkippableFact]
    public async Task Python_Cancelled_KillsDebootstrap_AndLeavesNoDirectoryMountOrProcess()
    {
        SkipUnlessDebootstrapPossible();
        var builder = new BaseImageBuilder(_scratch.Path);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(4));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => builder.BuildPythonAsync(cancellationToken: cts.Token));

        Assert.Empty(Directory.GetDirectories(_scratch.Path, ".build-*"));
        Assert.Empty(NativeFs.MountsBelow(_scratch.Path));
        Assert.Empty(ProcessesMentioning(_scratch.Path));
    }

    private static List<int> ProcessesMentioning(string text)
    {
        var result = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
            {
                continue;
            }

            try
            {
                if (File.ReadAllText(Path.Combine(dir, "cmdline")).Contains(text, StringComparison.Ordinal))
                {
                    result.Add(pid);
                }
            }
            catch (IOException)
            {
                // exited meanwhile
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        return result;
    }

    private static async Task<string> RunAsync(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', args)} exited {process.ExitCode}: {await stderr}");
        return await stdout;
    }
}
