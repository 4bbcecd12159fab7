using System.Diagnostics;
using KataAgent.Oci;
using Microsoft.Extensions.Logging;

namespace KataAgent.Images;

// The python recipe: debootstrap --variant=minbase from the host's Debian mirror, slimmed, packed as one gzip layer.
public sealed partial class BaseImageBuilder
{
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
}
