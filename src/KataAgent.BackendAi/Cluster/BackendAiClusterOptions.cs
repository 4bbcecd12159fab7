namespace KataAgent.BackendAi.Cluster;

/// <summary>How this agent joins a Backend.AI cluster (the <c>[backendai]</c> settings).</summary>
public sealed record BackendAiClusterOptions
{
    /// <summary>etcd client URLs (http://host:port); tried in order.</summary>
    public required IReadOnlyList<string> EtcdEndpoints { get; init; }

    /// <summary>Backend.AI's etcd namespace: keys live under /sorna/{namespace}/.</summary>
    public string Namespace { get; init; } = "local";

    public required string AgentId { get; init; }

    public string? Region { get; init; }

    public string ScalingGroup { get; init; } = "default";

    /// <summary>host:port the RPC server binds (Backend.AI's agent.rpc-listen-addr).</summary>
    public string RpcListenAddress { get; init; } = "0.0.0.0:6001";

    /// <summary>host:port the manager is told to dial, when it differs from the listen address.</summary>
    public string? AdvertisedRpcAddress { get; init; }

    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(20);

    public TimeSpan StatusHeartbeatInterval { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Start without waiting for a manager under nodes/manager (agent.skip-manager-detection).</summary>
    public bool SkipManagerDetection { get; init; }

    /// <summary>How long to wait for a manager before giving up; null: for ever (as the Python agent).</summary>
    public TimeSpan? ManagerWaitTimeout { get; init; }

    /// <summary>What the manager dials: the advertised address, else the listen address.</summary>
    public string ManagerFacingRpcAddress => AdvertisedRpcAddress ?? RpcListenAddress;
}
