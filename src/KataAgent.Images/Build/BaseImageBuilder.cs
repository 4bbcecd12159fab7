using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using KataAgent.Oci;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Images;

/// <summary>
/// Builds the session base images as OCI layout tars, cached on disk: the <c>python</c> image from
/// <c>debootstrap --variant=minbase</c> (mirror read from the host's APT sources), cleaned of caches, docs, man pages and
/// locales, packed as one gzip layer; and a tiny <c>busybox</c> image (static busybox plus applet symlinks) for fast tests.
/// The cache key is a hash of everything that shapes the image (builder version, suite, variant, packages, name, config,
/// architecture; for busybox the binary's digest), so a second build with the same inputs returns the cached archive at once.
/// Builds of the same key are serialised across processes by a lock file; a failed or cancelled build leaves no
/// temporary directory behind (anything a killed debootstrap left mounted inside it is unmounted first).
/// </summary>
public sealed class BaseImageBuilder
{
    /// <summary>Bumped whenever the builder's output for the same inputs changes; part of every cache key.</summary>
    public const string BuilderVersion = "1";

    /// <summary>Environment variable naming the image cache directory.</summary>
    public const string CacheEnvironmentVariable = "KATA_AGENT_CACHE";

    private static readonly DateTimeOffset BusyboxEpoch = new(2024, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly string[] SearchPath = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

    private readonly ILogger _logger;

    public BaseImageBuilder(string? cacheDirectory = null, ILogger? logger = null)
    {
        CacheDirectory = Path.GetFullPath(cacheDirectory ?? DefaultCacheDirectory);
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>$KATA_AGENT_CACHE if set, else /var/cache/kata-agent/images.</summary>
    public static string DefaultCacheDirectory
        => Environment.GetEnvironmentVariable(CacheEnvironmentVariable) is { Length: > 0 } dir ? dir : "/var/cache/kata-agent/images";

    public string CacheDirectory { get; }

    /// <summary>Where the archive for <paramref name="spec"/> is (or will be) cached.</summary>
    public string CachePathFor(PythonImageSpec spec) => CachePath(spec.ImageName, PythonCacheKey(spec));

    /// <summary>Where the archive for <paramref name="spec"/> is (or will be) cached.</summary>
    public async Task<string> CachePathForAsync(BusyboxImageSpec spec, CancellationToken cancellationToken = default)
        => CachePath(spec.ImageName, await BusyboxCacheKeyAsync(spec, cancellationToken).ConfigureAwait(false));

    /// <summary>Builds (or finds in the cache) the python image. Needs root and debootstrap; takes about 40 s cold.</summary>
    public Task<BuiltImage> BuildPythonAsync(PythonImageSpec? spec = null, CancellationToken cancellationToken = default)
    {
        spec ??= new PythonImageSpec();
        return BuildCachedAsync(spec.ImageName, PythonCacheKey(spec), (work, ct) => ProducePythonAsync(spec, work, ct), cancellationToken);
    }

    /// <summary>Builds (or finds in the cache) the busybox image. Needs a static busybox (Debian busybox-static); takes well under a second.</summary>
    public async Task<BuiltImage> BuildBusyboxAsync(BusyboxImageSpec? spec = null, CancellationToken cancellationToken = default)
    {
        spec ??= new BusyboxImageSpec();
        var key = await BusyboxCacheKeyAsync(spec, cancellationToken).ConfigureAwait(false);
        return await BuildCachedAsync(spec.ImageName, key, (work, ct) => ProduceBusyboxAsync(spec, work, ct), cancellationToken).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- cache

    private delegate Task<(ImageConfig Config, LayerBlob Layer)> Producer(string workDirectory, CancellationToken cancellationToken);

    private string CachePath(string imageName, string key)
    {
        var safe = new StringBuilder();
        foreach (var c in imageName)
        {
            safe.Append(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' ? c : '_');
        }

        return Path.Combine(CacheDirectory, $"{safe}-{key[..16]}.oci.tar");
    }

    private async Task<BuiltImage> BuildCachedAsync(string imageName, string key, Producer produce, CancellationToken cancellationToken)
    {
        var stopwatch = Stopwatch.StartNew();
        Directory.CreateDirectory(CacheDirectory);
        var path = CachePath(imageName, key);
        if (await TryLoadCachedAsync(path, imageName, stopwatch, cancellationToken).ConfigureAwait(false) is { } cached)
        {
            return cached;
        }

        await using var cacheLock = await AcquireLockAsync(path + ".lock", cancellationToken).ConfigureAwait(false);
        if (await TryLoadCachedAsync(path, imageName, stopwatch, cancellationToken).ConfigureAwait(false) is { } builtMeanwhile)
        {
            return builtMeanwhile;
        }

        var work = Path.Combine(CacheDirectory, $".build-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        try
        {
            _logger.LogInformation("building image {Image} (cache key {Key}) in {Work}", imageName, key[..16], work);
            var (config, layer) = await produce(work, cancellationToken).ConfigureAwait(false);
            await OciLayoutWriter.WriteFileAsync(path, config, [layer], imageName, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            try
            {
                NativeFs.DeleteTree(work);
            }
            catch (IOException cleanup)
            {
                // keep the build's own error; the leftover is named in the log
                _logger.LogError(cleanup, "cannot remove the failed build's directory {Work}", work);
            }

            throw;
        }

        NativeFs.DeleteTree(work);

        var built = await TryLoadCachedAsync(path, imageName, stopwatch, cancellationToken).ConfigureAwait(false)
            ?? throw new ImageBuildException($"the archive just built for {imageName} at {path} cannot be read back");
        _logger.LogInformation("built image {Image}: {Path}, {Size} bytes in {Elapsed}", imageName, path, built.ArchiveSize, stopwatch.Elapsed);
        return built with { FromCache = false };
    }

    private async Task<BuiltImage?> TryLoadCachedAsync(string path, string imageName, Stopwatch stopwatch, CancellationToken cancellationToken)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            await using var archive = await OciArchive.OpenAsync(path, cancellationToken: cancellationToken).ConfigureAwait(false);
            var image = archive.SingleImage;
            return new BuiltImage(path, image.Name ?? imageName, image.ManifestDescriptor, image.Config, image.Layers,
                new FileInfo(path).Length, FromCache: true, stopwatch.Elapsed);
        }
        catch (ImageArchiveException e)
        {
            _logger.LogWarning("cached image {Path} is unreadable, rebuilding: {Error}", path, e.Message);
            File.Delete(path);
            return null;
        }
    }

    private static async Task<FileStream> AcquireLockAsync(string lockPath, CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                // FileShare.None takes an exclusive flock on Linux: it also excludes other processes
                return new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(250), cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private static string Hash(params IEnumerable<string>[] parts)
    {
        var text = new StringBuilder();
        foreach (var part in parts)
        {
            foreach (var item in part)
            {
                text.Append(item.Length).Append(':').Append(item).Append('\n');
            }

            text.Append("--\n");
        }

        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    private static IEnumerable<string> Flatten(IReadOnlyDictionary<string, string> labels)
        => labels.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key + "=" + kv.Value);

    private static string PythonCacheKey(PythonImageSpec spec) => Hash(
        ["python", BuilderVersion, spec.ImageName, spec.Suite, spec.Variant, spec.BaseDistro, spec.WorkingDir, OciPlatform.Host.ToString()],
        spec.Packages.Order(StringComparer.Ordinal),
        spec.Env, spec.Cmd, Flatten(spec.Labels));

    private static async Task<string> BusyboxCacheKeyAsync(BusyboxImageSpec spec, CancellationToken cancellationToken)
    {
        string binary;
        try
        {
            var stream = new FileStream(spec.BusyboxPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous);
            await using (stream.ConfigureAwait(false))
            {
                binary = await OciDigest.ComputeAsync(stream, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ImageBuildException($"busybox not found at {spec.BusyboxPath} (install the Debian package busybox-static)", innerException: e);
        }

        return Hash(["busybox", BuilderVersion, spec.ImageName, binary, spec.WorkingDir, OciPlatform.Host.ToString()], spec.Env, spec.Cmd, Flatten(spec.Labels));
    }

    // ---------------------------------------------------------------- python (debootstrap)

    private async Task<(ImageConfig, LayerBlob)> ProducePythonAsync(PythonImageSpec spec, string work, CancellationToken cancellationToken)
    {
        if (!Environment.IsPrivilegedProcess)
        {
            throw new ImageBuildException("building the python image runs debootstrap, which needs root");
        }

        var debootstrap = FindExecutable("debootstrap")
            ?? throw new ImageBuildException("debootstrap is not installed (apt-get install debootstrap)");
        string mirror;
        var keyring = spec.Keyring;
        if (spec.Mirror is not null)
        {
            mirror = spec.Mirror;
        }
        else
        {
            AptSource source;
            try
            {
                source = AptSources.FindMirror(spec.Suite);
            }
            catch (InvalidOperationException e)
            {
                throw new ImageBuildException($"cannot find a Debian mirror for {spec.Suite}: {e.Message}", innerException: e);
            }

            mirror = source.Uri;
            if (keyring is null && source.SignedBy is not null && File.Exists(source.SignedBy))
            {
                keyring = source.SignedBy;
            }
        }

        var rootfs = Path.Combine(work, "rootfs");
        var arguments = new List<string> { $"--variant={spec.Variant}" };
        if (spec.Packages.Count > 0)
        {
            arguments.Add("--include=" + string.Join(',', spec.Packages));
        }

        if (keyring is not null)
        {
            arguments.Add("--keyring=" + keyring);
        }

        arguments.AddRange([spec.Suite, rootfs, mirror]);
        var commandLine = "debootstrap " + string.Join(' ', arguments);
        _logger.LogInformation("running {Command}", commandLine);

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(spec.DebootstrapTimeout);
        ProcessResult result;
        var stopwatch = Stopwatch.StartNew();
        try
        {
            result = await ChildProcess.RunAsync(debootstrap, arguments, new Dictionary<string, string>
            {
                ["DEBIAN_FRONTEND"] = "noninteractive",
                ["LC_ALL"] = "C",
                ["PATH"] = string.Join(':', SearchPath),
            }, timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new ImageBuildException($"{commandLine} did not finish within {spec.DebootstrapTimeout}");
        }
        finally
        {
            NativeFs.UnmountBelow(rootfs);
        }

        if (result.ExitCode != 0)
        {
            var log = Path.Combine(rootfs, "debootstrap", "debootstrap.log");
            var output = result.Output;
            if (File.Exists(log))
            {
                var text = await File.ReadAllTextAsync(log, cancellationToken).ConfigureAwait(false);
                output += "\n--- debootstrap.log (tail) ---\n" + (text.Length > 16384 ? text[^16384..] : text);
            }

            throw new ImageBuildException($"{commandLine} failed with exit code {result.ExitCode}", output);
        }

        _logger.LogInformation("debootstrap finished in {Elapsed}", stopwatch.Elapsed);
        if (!File.Exists(Path.Combine(rootfs, "usr", "bin", "python3")) && spec.Packages.Any(p => p.StartsWith("python3", StringComparison.Ordinal)))
        {
            throw new ImageBuildException($"{commandLine} succeeded but the rootfs has no /usr/bin/python3", result.Output);
        }

        SlimDebianRootfs(rootfs);
        CreateDirectory(Path.Combine(rootfs, spec.WorkingDir.TrimStart('/')), 0b111_101_101);

        var layerFile = Path.Combine(work, "layer.tar.gz");
        var layer = await RootfsLayerWriter.WriteFileAsync(rootfs, layerFile, new LayerWriterOptions { Compression = LayerCompression.Gzip }, cancellationToken).ConfigureAwait(false);
        var labels = new Dictionary<string, string>(spec.Labels) { ["ai.backend.base-distro"] = spec.BaseDistro };
        var config = NewConfig(spec.Env, spec.Cmd, spec.WorkingDir, labels,
            $"{commandLine.Replace(rootfs, "ROOTFS", StringComparison.Ordinal)}; slimmed by kata-agent image builder v{BuilderVersion}");
        return (config, LayerBlob.FromInfo(layer, layerFile));
    }

    /// <summary>Removes what a session image does not need and keeps dpkg from bringing docs back.</summary>
    private static void SlimDebianRootfs(string rootfs)
    {
        string[] emptied =
        [
            "var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian",
            "usr/share/linda", "var/log", "tmp", "var/tmp", "dev",
        ];
        foreach (var dir in emptied)
        {
            EmptyDirectory(Path.Combine(rootfs, dir), keepTopLevelFiles: false);
        }

        EmptyDirectory(Path.Combine(rootfs, "usr/share/locale"), keepTopLevelFiles: true); // keeps locale.alias

        foreach (var file in new[] { "var/cache/ldconfig/aux-cache", "etc/hostname", "etc/machine-id" })
        {
            DeleteFile(Path.Combine(rootfs, file));
        }

        foreach (var dir in new[] { "var/cache/debconf", "var/lib/dpkg" })
        {
            var full = Path.Combine(rootfs, dir);
            if (Directory.Exists(full))
            {
                foreach (var old in Directory.EnumerateFiles(full, "*-old"))
                {
                    DeleteFile(old);
                }
            }
        }

        // debootstrap copies the host's resolv.conf; the runtime provides the session's
        var resolv = Path.Combine(rootfs, "etc/resolv.conf");
        if (File.Exists(resolv) && new FileInfo(resolv).LinkTarget is null)
        {
            File.WriteAllText(resolv, "");
        }

        var dpkgConf = Path.Combine(rootfs, "etc/dpkg/dpkg.cfg.d");
        if (Directory.Exists(dpkgConf))
        {
            File.WriteAllText(Path.Combine(dpkgConf, "01-kata-agent-slim"),
                "# kata-agent base image: keep docs, man pages and translations out\n"
                + "path-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\n"
                + "path-exclude=/usr/share/locale/*/*\npath-exclude=/usr/share/lintian/*\n");
        }
    }

    private static void EmptyDirectory(string directory, bool keepTopLevelFiles)
    {
        if (!Directory.Exists(directory) || new DirectoryInfo(directory).LinkTarget is not null)
        {
            return;
        }

        foreach (var entry in Directory.EnumerateFileSystemEntries(directory))
        {
            var stat = NativeFs.LStat(entry);
            if (stat.Type == UnixStat.Directory)
            {
                Directory.Delete(entry, recursive: true); // does not follow symlinks inside
            }
            else if (!keepTopLevelFiles)
            {
                File.Delete(entry);
            }
        }
    }

    private static void DeleteFile(string path)
    {
        if (File.Exists(path) || new FileInfo(path).LinkTarget is not null)
        {
            File.Delete(path);
        }
    }

    // ---------------------------------------------------------------- busybox

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

    // ---------------------------------------------------------------- helpers

    private static ImageConfig NewConfig(IReadOnlyList<string> env, IReadOnlyList<string> cmd, string workingDir, IReadOnlyDictionary<string, string> labels, string createdBy)
        => new()
        {
            Architecture = OciPlatform.Host.Architecture,
            Os = "linux",
            Config = new ImageRuntimeConfig { Env = [.. env], Cmd = [.. cmd], WorkingDir = workingDir, Labels = new Dictionary<string, string>(labels) },
            Rootfs = new ImageRootfs(),
            History = [new ImageHistory { CreatedBy = createdBy }],
        };

    private static void CreateDirectory(string path, int mode)
    {
        Directory.CreateDirectory(path);
        File.SetUnixFileMode(path, (UnixFileMode)mode);
    }

    private static string? FindExecutable(string name)
    {
        var path = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries).Concat(SearchPath);
        return path.Select(dir => Path.Combine(dir, name)).FirstOrDefault(File.Exists);
    }
}
