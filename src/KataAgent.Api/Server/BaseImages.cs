using KataAgent.Images;
using Agent = KataAgent.Core.Agent;

namespace KataAgent.Api.Server;

/// <summary>The base images the agent can build itself (debootstrap python, busybox).</summary>
public static class BaseImages
{
    public const string DefaultImage = "kata-agent/python:3-bookworm";

    /// <summary>Builds (or takes from the cache) and imports a base image; returns its name.</summary>
    public static async Task<string> EnsureAsync(Agent agent, string kind, IProgress<string>? progress, CancellationToken cancellationToken)
    {
        var builder = new BaseImageBuilder();
        BuiltImage built;
        switch (string.IsNullOrEmpty(kind) ? "python" : kind)
        {
            case "python":
                var spec = new PythonImageSpec();
                progress?.Report(File.Exists(builder.CachePathFor(spec))
                    ? $"using the cached build of {spec.ImageName}"
                    : $"building {spec.ImageName} with debootstrap (about a minute the first time)");
                built = await builder.BuildPythonAsync(spec, cancellationToken);
                break;
            case "busybox":
                progress?.Report("building kata-agent/busybox:latest");
                built = await builder.BuildBusyboxAsync(cancellationToken: cancellationToken);
                break;
            default:
                throw new ArgumentException($"unknown base image kind '{kind}' (python, busybox)");
        }
        progress?.Report($"importing {built.Name} into containerd");
        // The agent's own build may replace its own earlier one (a rebuilt base image).
        var imported = await new ImageImporter(agent.Containerd).ImportAsync(built.ArchivePath, new ImportOptions { Replace = true }, cancellationToken);
        return imported.Single().Name;
    }
}
