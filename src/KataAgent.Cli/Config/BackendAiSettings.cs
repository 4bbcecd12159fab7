using KataAgent.BackendAi.Cluster;
using KataAgent.BackendAi.Hosting;

namespace KataAgent.Cli.Config;

/// <summary>The <c>[backendai]</c> section as read; <see cref="ToOptions"/> turns it into the adapter's options.</summary>
internal sealed record BackendAiSettings
{
    public IReadOnlyList<string> EtcdEndpoints { get; init; } = [];
    public string Namespace { get; init; } = "local";
    public string AgentId { get; init; } = "";
    public string Region { get; init; } = "";
    public string ScalingGroup { get; init; } = "default";
    public string RpcListen { get; init; } = "0.0.0.0:6001";
    public string RpcAdvertised { get; init; } = "";
    public string PublicHost { get; init; } = "";
    public string AgentKeypair { get; init; } = "";
    public string ManagerPublicKey { get; init; } = "";
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(20);
    public TimeSpan StatusHeartbeatInterval { get; init; } = TimeSpan.FromSeconds(60);
    public bool SkipManagerDetection { get; init; }
    public TimeSpan? ManagerWaitTimeout { get; init; }
    public string? RuntimeClass { get; init; }
    public IReadOnlyDictionary<string, string> RuntimeClassByScalingGroup { get; init; } = new Dictionary<string, string>();
    public IReadOnlyDictionary<string, string> RuntimeClassByImage { get; init; } = new Dictionary<string, string>();
    public IReadOnlyDictionary<string, string> ImageNames { get; init; } = new Dictionary<string, string>();

    /// <summary>Null when no etcd endpoint is set: the agent does not join a cluster.</summary>
    public BackendAiOptions? ToOptions(string defaultAgentId) => EtcdEndpoints.Count == 0 ? null : new BackendAiOptions
    {
        Cluster = new BackendAiClusterOptions
        {
            EtcdEndpoints = EtcdEndpoints,
            Namespace = Namespace,
            AgentId = AgentId.Length > 0 ? AgentId : defaultAgentId,
            Region = Region.Length > 0 ? Region : null,
            ScalingGroup = ScalingGroup,
            RpcListenAddress = RpcListen,
            AdvertisedRpcAddress = RpcAdvertised.Length > 0 ? RpcAdvertised : null,
            HeartbeatInterval = HeartbeatInterval,
            StatusHeartbeatInterval = StatusHeartbeatInterval,
            SkipManagerDetection = SkipManagerDetection,
            ManagerWaitTimeout = ManagerWaitTimeout,
        },
        AgentKeypairPath = AgentKeypair.Length > 0 ? AgentKeypair : null,
        ManagerPublicKeyPath = ManagerPublicKey.Length > 0 ? ManagerPublicKey : null,
        PublicHost = PublicHost.Length > 0 ? PublicHost : null,
        RuntimeClass = RuntimeClass,
        RuntimeClassByScalingGroup = RuntimeClassByScalingGroup,
        RuntimeClassByImage = RuntimeClassByImage,
        ImageNames = ImageNames,
    };
}
