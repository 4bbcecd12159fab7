namespace KataAgent.BackendAi.Events;

/// <summary>What the heartbeats report about the agent, read fresh for each heartbeat.</summary>
public interface IAgentFacts
{
    /// <summary>The agent's capacity per slot (Backend.AI slot names: <c>cpu</c> in cores, <c>mem</c> in bytes).</summary>
    IReadOnlyList<SlotCapacity> Slots { get; }

    /// <summary>The images on this agent: canonical reference and digest.</summary>
    Task<IReadOnlyList<AgentImage>> ListImagesAsync(CancellationToken cancellationToken);

    /// <summary>The manager's kernels this agent runs, with their container and state.</summary>
    IReadOnlyList<AgentContainer> Containers { get; }
}

/// <summary>One resource slot: name, unit (Backend.AI SlotTypes: count, bytes, unique) and what the agent offers.</summary>
public sealed record SlotCapacity(string Name, string Unit, decimal Amount);

public sealed record AgentImage(string Canonical, string Digest);

/// <summary>A kernel's container; <paramref name="Status"/> is Backend.AI's ContainerStatus value (running, paused, exited…).</summary>
public sealed record AgentContainer(Guid KernelId, string ContainerId, string Status);
