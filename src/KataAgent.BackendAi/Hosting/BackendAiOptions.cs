using KataAgent.BackendAi.Cluster;
using KataAgent.BackendAi.Kernels;

namespace KataAgent.BackendAi.Hosting;

/// <summary>Everything the <c>[backendai]</c> section of kata-agent.toml sets: how this agent joins a Backend.AI cluster.</summary>
public sealed record BackendAiOptions
{
    public required BackendAiClusterOptions Cluster { get; init; }

    /// <summary>The agent's CURVE keypair (pyzmq <c>.key_secret</c> file); null: plain ZMTP (NULL mechanism).</summary>
    public string? AgentKeypairPath { get; init; }

    /// <summary>The manager's public key (pyzmq <c>.key</c> file), the only client Backend.AI admits.</summary>
    public string? ManagerPublicKeyPath { get; init; }

    /// <summary>Where users reach the sessions' published ports (kernel_host, public_host); null: the RPC host.</summary>
    public string? PublicHost { get; init; }

    /// <summary>Runtime class for manager sessions; null: the agent's default class.</summary>
    public string? RuntimeClass { get; init; }

    public IReadOnlyDictionary<string, string> RuntimeClassByScalingGroup { get; init; } = new Dictionary<string, string>();

    public IReadOnlyDictionary<string, string> RuntimeClassByImage { get; init; } = new Dictionary<string, string>();

    /// <summary>Our image name per Backend.AI image canonical.</summary>
    public IReadOnlyDictionary<string, string> ImageNames { get; init; } = new Dictionary<string, string>();

    /// <summary>The methods' options, from these settings and the address the RPC server really bound.</summary>
    internal BackendAiAgentOptions MethodOptions(string managerFacingAddress, string kernelHost) => new()
    {
        AgentId = Cluster.AgentId,
        ScalingGroup = Cluster.ScalingGroup,
        AgentAddress = "tcp://" + managerFacingAddress,
        KernelHost = kernelHost,
        RuntimeClass = RuntimeClass,
        RuntimeClassByScalingGroup = RuntimeClassByScalingGroup,
        RuntimeClassByImage = RuntimeClassByImage,
        ImageNames = ImageNames,
    };
}
