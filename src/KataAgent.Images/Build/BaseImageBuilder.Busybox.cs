using KataAgent.Oci;

namespace KataAgent.Images;

// The busybox recipe: a static busybox and its applet links, for fast tests.
public sealed partial class BaseImageBuilder
{
    private static readonly DateTimeOffset BusyboxEpoch = new(2024, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private async Task<(ImageConfig, LayerBlob)> ProduceBusyboxAsync(BusyboxImageSpec spec, string work, CancellationToken cancellationToken)
    {
        if (!await IsStaticElfAsync(spec.BusyboxPath, cancellationToken).ConfigureAwait(false))
        {
            throw new ImageBuildException($"{spec.BusyboxPath} is not a statically linked ELF executable (install the Debian package busybox-static)");
        }

        var list = await ChildProcess.RunAsync(spec.BusyboxPath, ["--list-full"], null, cancellationToken).ConfigureAwait(false);
        if (list.ExitCode != 0)
        {
            throw new ImageBuildException($"{spec.BusyboxPath} --list-full failed with exit code {list.ExitCode}", list.Output);
        }

        var rootfs = Path.Combine(work, "rootfs");
        const int dirMode = 0b111_101_101;
        foreach (var dir in new[] { "", "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "var", "home" })
        {
            CreateDirectory(Path.Combine(rootfs, dir), dirMode);
        }

        CreateDirectory(Path.Combine(rootfs, "root"), 0b111_000_000);
        CreateDirectory(Path.Combine(rootfs, "tmp"), 0b1_111_111_111); // 1777
        CreateDirectory(Path.Combine(rootfs, spec.WorkingDir.TrimStart('/')), dirMode);

        var binary = Path.Combine(rootfs, "bin", "busybox");
        var source = new FileStream(spec.BusyboxPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous);
        await using (source.ConfigureAwait(false))
        {
            var target = new FileStream(binary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
            await using (target.ConfigureAwait(false))
            {
                await source.CopyToAsync(target, cancellationToken).ConfigureAwait(false);
            }
        }

        File.SetUnixFileMode(binary, (UnixFileMode)0b111_101_101);
        foreach (var applet in list.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var relative = applet.TrimStart('/');
            if (relative == "bin/busybox" || relative.Contains("..", StringComparison.Ordinal))
            {
                continue;
            }

            var link = Path.Combine(rootfs, relative);
            CreateDirectory(Path.GetDirectoryName(link)!, dirMode);
            if (!File.Exists(link) && new FileInfo(link).LinkTarget is null)
            {
                File.CreateSymbolicLink(link, "/bin/busybox");
            }
        }

        await WriteTextAsync(Path.Combine(rootfs, "etc", "passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwork:x:1000:1000:work:/home/work:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", cancellationToken).ConfigureAwait(false);
        await WriteTextAsync(Path.Combine(rootfs, "etc", "group"), "root:x:0:\nwork:x:1000:\nnogroup:x:65534:\n", cancellationToken).ConfigureAwait(false);

        var layerFile = Path.Combine(work, "layer.tar.gz");
        var layer = await RootfsLayerWriter.WriteFileAsync(rootfs, layerFile, new LayerWriterOptions
        {
            Compression = LayerCompression.Gzip,
            Owner = (0, 0),
            ClampModificationTime = BusyboxEpoch,
        }, cancellationToken).ConfigureAwait(false);
        var config = NewConfig(spec.Env, spec.Cmd, spec.WorkingDir, spec.Labels, $"busybox from {spec.BusyboxPath}; kata-agent image builder v{BuilderVersion}");
        return (config, LayerBlob.FromInfo(layer, layerFile));
    }

    private static async Task WriteTextAsync(string path, string text, CancellationToken cancellationToken)
    {
        await File.WriteAllTextAsync(path, text, cancellationToken).ConfigureAwait(false);
        File.SetUnixFileMode(path, (UnixFileMode)0b110_100_100);
    }

    /// <summary>An ELF executable without a PT_INTERP program header runs without a dynamic loader.</summary>
    internal static async Task<bool> IsStaticElfAsync(string path, CancellationToken cancellationToken)
    {
        var data = await File.ReadAllBytesAsync(path, cancellationToken).ConfigureAwait(false);
        if (data.Length < 64 || data[0] != 0x7f || data[1] != (byte)'E' || data[2] != (byte)'L' || data[3] != (byte)'F' || data[4] != 2 || data[5] != 1)
        {
            return false; // only 64-bit little-endian ELF is expected here
        }

        var phoff = BitConverter.ToInt64(data, 0x20);
        var phentsize = BitConverter.ToUInt16(data, 0x36);
        var phnum = BitConverter.ToUInt16(data, 0x38);
        for (var i = 0; i < phnum; i++)
        {
            var offset = phoff + ((long)i * phentsize);
            if (offset + 4 > data.Length)
            {
                return false;
            }

            if (BitConverter.ToUInt32(data, (int)offset) == 3) // PT_INTERP
            {
                return false;
            }
        }

        return true;
    }
}
