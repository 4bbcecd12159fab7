namespace KataAgent.BackendAi.Kernels;

/// <summary>How the Backend.AI methods map onto this agent.</summary>
public sealed record BackendAiAgentOptions
{
    /// <summary>The agent id events carry (image_pull_* name it). Empty: the Core agent's id.</summary>
    public string AgentId { get; init; } = "";

    public string ScalingGroup { get; init; } = "default";

    /// <summary>Where the manager reaches this agent's RPC port (<c>tcp://host:port</c>), reported as agent_addr.</summary>
    public string AgentAddress { get; init; } = "";

    /// <summary>The host the manager connects to for the kernel's repl and service ports (kernel_host).</summary>
    public string KernelHost { get; init; } = "127.0.0.1";

    /// <summary>
    /// Runtime class for every session; null: the Core agent's default (kata, with its fallback when kata is unavailable).
    /// </summary>
    public string? RuntimeClass { get; init; }

    /// <summary>Runtime class per scaling group (overrides <see cref="RuntimeClass"/>).</summary>
    public IReadOnlyDictionary<string, string> RuntimeClassByScalingGroup { get; init; } = new Dictionary<string, string>();

    /// <summary>Runtime class per image canonical name (overrides the scaling group's).</summary>
    public IReadOnlyDictionary<string, string> RuntimeClassByImage { get; init; } = new Dictionary<string, string>();

    /// <summary>Our image name per Backend.AI image canonical; an image not listed is looked up under its canonical.</summary>
    public IReadOnlyDictionary<string, string> ImageNames { get; init; } = new Dictionary<string, string>();

    /// <summary>download_file and download_single refuse more than this (Backend.AI's limit).</summary>
    public long MaxDownloadBytes { get; init; } = 1 << 20;

    /// <summary>Where the session's scratch dir appears inside it (list_files' abspath).</summary>
    public string WorkDir { get; init; } = "/home/work";
}
