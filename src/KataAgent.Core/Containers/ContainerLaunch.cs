using KataAgent.Containerd.Runtime;
using KataAgent.Containerd.Services;
using KataAgent.Oci;

namespace KataAgent.Core.Containers;

/// <summary>An image ready to run: its config and the committed snapshot of its top layer.</summary>
public sealed record ResolvedImage(string Name, ImageConfig Config, string ChainId);

/// <summary>Everything needed to create and start one container.</summary>
public sealed record ContainerLaunch(string Id, ResolvedImage Image, RuntimeClass Runtime)
{
    /// <summary>Replaces the image's Cmd (Docker semantics); null keeps it.</summary>
    public IReadOnlyList<string>? Args { get; init; }
    public IReadOnlyList<SpecOpt> SpecOpts { get; init; } = [];
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();
    public TaskIo Io { get; init; } = TaskIo.Null;
}

public sealed record LaunchedContainer(string Id, uint Pid);

/// <summary>A create step failed; everything earlier was undone.</summary>
public sealed class ContainerLaunchException(string containerId, string step, Exception inner)
    : Exception($"creating container {containerId} failed at step '{step}': {inner.Message}", inner)
{
    public string ContainerId { get; } = containerId;
    public string Step { get; } = step;
}
