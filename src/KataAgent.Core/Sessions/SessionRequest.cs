namespace KataAgent.Core.Sessions;

public sealed record MountRequest(string HostPath, string ContainerPath, bool ReadOnly);

/// <summary>What a client asks for. Everything optional falls back to the agent's defaults.</summary>
public sealed record SessionRequest
{
    public required string Image { get; init; }
    public string? RuntimeClass { get; init; }
    /// <summary>Backend.AI kernel id; generated when absent.</summary>
    public string? KernelId { get; init; }
    public string? SessionId { get; init; }
    public double? Cpus { get; init; }
    public long? MemoryBytes { get; init; }
    public long? ShmBytes { get; init; }
    /// <summary>Hard size limit of the work dir (/home/work); null: the agent's default.</summary>
    public long? ScratchBytes { get; init; }
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();
    public IReadOnlyList<MountRequest> Mounts { get; init; } = [];
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();
    /// <summary>Shell script the runner runs once at start, as the guest user; written to /home/work/bootstrap.sh (0700).</summary>
    public string? BootstrapScript { get; init; }
    /// <summary>Service ports beyond those the image declares (ai.backend.service-ports), published like them.</summary>
    public IReadOnlyList<ServicePortDefinition> ServicePorts { get; init; } = [];
    /// <summary>Run the runner (and so the user's code) as this uid/gid instead of root.</summary>
    public int? Uid { get; init; }
    public int? Gid { get; init; }
    /// <summary>What the session may reach; null: the agent's default.</summary>
    public Network.Isolation.EgressPolicy? Egress { get; init; }
    /// <summary>Capabilities beyond the default set (each must be in the agent's allowed_capabilities).</summary>
    public IReadOnlyList<string> AddCapabilities { get; init; } = [];
    /// <summary>
    /// Run this command (argv) as the session's kernel runner instead of the agent's own: an image's own runner
    /// (e.g. Backend.AI's <c>python3 -m ai.backend.kernel python /usr/bin/python3</c>), driven without CURVE.
    /// Empty: the image's <c>io.kata-agent.runner-command</c> label if it has one, else the agent's runner.
    /// </summary>
    public IReadOnlyList<string> RunnerCommand { get; init; } = [];
    /// <summary>
    /// End the session (idle-timeout) after this long without an execute, a file transfer or traffic on its service
    /// ports; null: the agent's default (timeouts.idle); zero: never.
    /// </summary>
    public TimeSpan? IdleTimeout { get; init; }
    /// <summary>End the session (lifetime-expired) this long after it was created (plus extensions); null: the agent's default; zero: never.</summary>
    public TimeSpan? MaxLifetime { get; init; }
    /// <summary>
    /// A run longer than this is stopped and the session ends (exec-timeout), as Backend.AI's manager destroys a kernel
    /// after an exec timeout; null: the agent's default (timeouts.exec); zero: never. A run's own limit
    /// (<see cref="Runner.Protocol.ExecutionOptions"/>) only stops that run.
    /// </summary>
    public TimeSpan? ExecTimeout { get; init; }
    /// <summary>
    /// An OOM kill in the session ends the session (oom-killed) instead of only the killed process (the interpreter);
    /// null: the agent's default (limits.end_session_on_oom, on).
    /// </summary>
    public bool? EndOnOutOfMemory { get; init; }
    /// <summary>Set by the agent alone, on the creates that fill a warm pool (the pool's key); clients leave it null.</summary>
    public string? Pool { get; init; }
}
