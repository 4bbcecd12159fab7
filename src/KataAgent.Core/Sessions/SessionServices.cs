using KataAgent.Containerd;
using KataAgent.Core.Cgroups;
using KataAgent.Core.Resources;
using KataAgent.Core.Runtime;
using KataAgent.Images;
using KataAgent.Network;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Sessions;

/// <summary>What the session pipeline works with: one instance per agent.</summary>
public sealed record SessionServices(
    AgentOptions Options,
    ContainerdClient Containerd,
    ImageInspector Images,
    RuntimeClassRegistry RuntimeClasses,
    ResourceAllocator Resources,
    HostPortPool Ports,
    SessionNetwork Network,
    SessionStore Store,
    SessionCgroupParent Cgroups,
    ILogger Logger)
{
    /// <summary>The resolvers sessions are given (and the guard lets through on port 53).</summary>
    public IReadOnlyList<System.Net.IPAddress> Resolvers { get; init; } = [];

    /// <summary>Pins requested host mounts and stages them for the runtime.</summary>
    public Mounts.MountStaging MountStaging { get; init; } = new(Options.MountStagingRoot, Logger);
    /// <summary>Carry each session's container stdout/stderr into its capped log.</summary>
    public required Logs.LogRelays LogRelays { get; init; }
}
