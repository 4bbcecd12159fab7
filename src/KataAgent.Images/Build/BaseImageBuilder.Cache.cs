using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using KataAgent.Oci;
using Microsoft.Extensions.Logging;

namespace KataAgent.Images;

// The image cache: archive paths by cache key, the per-key build lock, and the keys themselves.
public sealed partial class BaseImageBuilder
{
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

        var cacheLock = await AcquireLockAsync(path + ".lock", cancellationToken).ConfigureAwait(false);
        await using var cacheLockDisposal = cacheLock.ConfigureAwait(false);
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
            var archive = await OciArchive.OpenAsync(path, cancellationToken: cancellationToken).ConfigureAwait(false);
            await using var archiveDisposal = archive.ConfigureAwait(false);
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
}
