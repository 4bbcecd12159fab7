namespace KataAgent.BackendAi.Events;

/// <summary>What the heartbeat says about this agent beyond its facts (BA25 AgentInfo fields).</summary>
public sealed record AgentHeartbeatOptions
{
    public required string AgentId { get; init; }

    /// <summary>host:port the manager dials (advertised RPC address, else the listen address); addr = tcp://this.</summary>
    public required string RpcAddress { get; init; }

    public string? Region { get; init; }

    public string ScalingGroup { get; init; } = "default";

    /// <summary>Where users reach the sessions' published ports; default: the RPC host.</summary>
    public string? PublicHost { get; init; }

    /// <summary>z85 CURVE public key of the RPC server; null without CURVE.</summary>
    public byte[]? PublicKey { get; init; }

    /// <summary>Reported as the agent's version (the manager only stores it).</summary>
    public string Version { get; init; } = "25.15.0";

    /// <summary>Backend.AI's architecture names (x86_64, aarch64); default: this host's.</summary>
    public string? Architecture { get; init; }

    public bool AutoTerminateAbusingKernel { get; init; }

    /// <summary>agent_heartbeat period (BA25 debug.heartbeat-interval; the manager gives up after 40 s).</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>agent_status_heartbeat period (the container list the manager reconciles against).</summary>
    public TimeSpan StatusHeartbeatInterval { get; init; } = TimeSpan.FromSeconds(60);
}
