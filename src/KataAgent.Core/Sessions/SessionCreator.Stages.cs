using KataAgent.Core.Mounts;
using KataAgent.Core.Resources;
using KataAgent.Core.Runtime;
using KataAgent.Core.Scratch;
using KataAgent.Images;
using KataAgent.Network;
using KataAgent.Runner.Protocol;

namespace KataAgent.Core.Sessions;

// What each create step hands to the next. Every stage is the one before it plus what its step produced, so a step
// can only be written against what the steps before it have made, and nothing in here is ever null for "not yet".
public sealed partial class SessionCreator
{
    /// <summary>What a create starts from: the request and the kernel id the session will have.</summary>
    private record Requested(SessionRequest Request, string KernelId);

    /// <summary>
    /// validate: the request is sound, its runtime class is known, and its mount sources are open (pinned), held for
    /// step mounts, which closes them.
    /// </summary>
    private record Validated : Requested
    {
        public Validated(Requested requested, RuntimeClassStatus runtime, PinnedMountSources mountSources) : base(requested)
        {
            Runtime = runtime;
            MountSources = mountSources;
        }

        public RuntimeClassStatus Runtime { get; }
        public PinnedMountSources MountSources { get; }
    }

    /// <summary>
    /// What the image's labels and the request decided about the session's runner and services: the runner command
    /// (null: the agent's own runner), the image's declared features, the service ports with what get-apps adds.
    /// </summary>
    private sealed record Steering(IReadOnlyList<string>? RunnerCommand, IReadOnlyList<string>? Features, IReadOnlyList<SessionServicePort> ServicePorts);

    /// <summary>resolve-image: the image (which the session is big enough for), the service ports its label and the request declare, and the runner.</summary>
    private record ImageResolved : Validated
    {
        public ImageResolved(Validated validated, ImageDetails image, IReadOnlyList<ServicePortDefinition> services, Steering steering) : base(validated)
        {
            Image = image;
            Services = services;
            Steering = steering;
        }

        public ImageDetails Image { get; }
        public IReadOnlyList<ServicePortDefinition> Services { get; }
        public Steering Steering { get; }
    }

    /// <summary>mounts: where each requested mount was staged (request order): what the runtime gets as the source.</summary>
    private record MountsStaged : ImageResolved
    {
        public MountsStaged(ImageResolved resolved, IReadOnlyList<string> stagedMounts) : base(resolved) => StagedMounts = stagedMounts;

        public IReadOnlyList<string> StagedMounts { get; }
    }

    /// <summary>allocate-resources: the session's CPU and memory share.</summary>
    private record ResourcesAllocated : MountsStaged
    {
        public ResourcesAllocated(MountsStaged staged, ResourceAllocation allocation) : base(staged) => Allocation = allocation;

        public ResourceAllocation Allocation { get; }
    }

    /// <summary>allocate-ports: the runner's two ports, then one per service port, each with its host port.</summary>
    private record PortsAllocated : ResourcesAllocated
    {
        public PortsAllocated(ResourcesAllocated allocated, IReadOnlyList<PublishedPort> ports) : base(allocated) => Ports = ports;

        public IReadOnlyList<PublishedPort> Ports { get; }
    }

    /// <summary>
    /// scratch (and scratch-disk, which adds nothing to hand on): the scratch dir, the log, the runner's keys (none for
    /// an image's own runner), and the network attach that started beside them (step network waits for it).
    /// </summary>
    private sealed record ScratchReady : PortsAllocated
    {
        public ScratchReady(PortsAllocated allocated, ScratchDirectory scratch, string logPath, RunnerCurveKeys? runnerCurve,
            Task<NetworkAttachment> network) : base(allocated)
        {
            Scratch = scratch;
            LogPath = logPath;
            RunnerCurve = runnerCurve;
            Network = network;
        }

        public ScratchDirectory Scratch { get; }
        public string LogPath { get; }
        public RunnerCurveKeys? RunnerCurve { get; }
        public Task<NetworkAttachment> Network { get; }
    }

    /// <summary>
    /// network: everything a session's container is made from — what create's steps produced, or, for a restart,
    /// what the session's record says. <see cref="RunnerCurve"/> is null for an image's own runner and for a session
    /// recorded before runner keys existed.
    /// </summary>
    private sealed record SessionParts(
        SessionRequest Request,
        string KernelId,
        RuntimeClassStatus Runtime,
        ImageDetails Image,
        ResourceAllocation Allocation,
        IReadOnlyList<PublishedPort> Ports,
        ScratchDirectory Scratch,
        string LogPath,
        RunnerCurveKeys? RunnerCurve,
        Steering Steering,
        NetworkAttachment Network,
        IReadOnlyList<string> StagedMounts);
}
