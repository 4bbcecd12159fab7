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
public sealed partial class BaseImageBuilder
{
    /// <summary>Bumped whenever the builder's output for the same inputs changes; part of every cache key.</summary>
    public const string BuilderVersion = "1";

    /// <summary>Environment variable naming the image cache directory.</summary>
    public const string CacheEnvironmentVariable = "KATA_AGENT_CACHE";

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
