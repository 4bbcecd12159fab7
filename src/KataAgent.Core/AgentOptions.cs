namespace KataAgent.Core;

/// <summary>What the core needs to know; the CLI maps kata-agent.toml onto it.</summary>
public sealed record AgentOptions
{
    /// <summary>Identifies this agent on its containers (label ai.backend.owner).</summary>
    public string AgentId { get; init; } = Environment.MachineName;
    public string DataDir { get; init; } = "/var/lib/kata-agent";
    public string ScratchRoot => Path.Combine(DataDir, "scratch");
    public string StateDir => Path.Combine(DataDir, "state");
    public string LogDir => Path.Combine(DataDir, "logs");
    /// <summary>Where requested host mounts are pinned and staged for the runtime (docs/MOUNTS.md).</summary>
    public string MountStagingRoot => Path.Combine(DataDir, "mounts");
    /// <summary>The sessions' scratch disk images (ScratchQuota), one sparse file per session.</summary>
    public string ScratchDiskDir => Path.Combine(DataDir, "scratch-disks");

    /// <summary>How this agent names itself in the data dir's lock file (kind, pid, API socket), for whoever finds it taken.</summary>
    public Locking.DataDirLockHolder LockHolder { get; init; } = new("agent", Environment.ProcessId, null);

    /// <summary>Null: start a private containerd under the data dir (the embedded default).</summary>
    public string? ContainerdAddress { get; init; }
    public string Namespace { get; init; } = "kata-agent";
    /// <summary>The cgroup the agent creates its sessions' cgroups under, in every hierarchy (it owns it).</summary>
    public string CgroupParent { get; init; } = "/kata-agent";

    public string DefaultRuntimeClass { get; init; } = "kata";
    /// <summary>The runtime classes a request may ask for; runc (no sandbox) only when listed here.</summary>
    public IReadOnlyList<string> AllowedRuntimeClasses { get; init; } = ["kata", "gvisor"];
    /// <summary>
    /// Config file per runtime class that takes one (the Kata flavours, passed as runtime options), by class name; a
    /// class not listed uses its default from the runtime-class table (kata: the host's default Kata config).
    /// </summary>
    public IReadOnlyDictionary<string, string> RuntimeConfigPaths { get; init; } = new Dictionary<string, string>(StringComparer.Ordinal);
    public string RunscPath { get; init; } = "/usr/bin/runsc";

    /// <summary>Folder holding the published kata-runner and its driver; mounted read-only into every session.</summary>
    public string RunnerDir { get; init; } = "";

    public int PortRangeStart { get; init; } = 30000;
    public int PortRangeEnd { get; init; } = 31000;
    /// <summary>Where service ports are published; runner ports are always on 127.0.0.1.</summary>
    public string ServiceBindHost { get; init; } = "127.0.0.1";

    public string CniPluginDir { get; init; } = "/usr/lib/cni";
    public string NetworkName { get; init; } = "kata-agent";
    public string BridgeName { get; init; } = "ka0";
    public string Subnet { get; init; } = "10.88.64.0/20";
    public bool IpMasquerade { get; init; } = true;
    /// <summary>Prefix of the agent's named network namespaces; everything under it is the agent's own (several agents on one host need distinct ones).</summary>
    public string NetnsPrefix { get; init; } = "ka-";
    /// <summary>What sessions may reach when their request does not say (public internet only, or nothing).</summary>
    public Network.Isolation.EgressPolicy DefaultEgress { get; init; } = Network.Isolation.EgressPolicy.Public;
    /// <summary>Destinations refused to sessions besides the built-in non-public ranges (IPv4 CIDRs).</summary>
    public IReadOnlyList<string> DenyCidrs { get; init; } = [];
    /// <summary>Resolvers sessions are given (their /etc/resolv.conf); empty: the host's non-loopback nameservers.</summary>
    public IReadOnlyList<string> Dns { get; init; } = [];
    /// <summary>Capabilities beyond the default set that a request may ask for (CAP_NET_RAW is not in the default set).</summary>
    public IReadOnlyList<string> AllowedCapabilities { get; init; } = ["CAP_NET_RAW"];

    public TimeSpan RunnerReadyTimeout { get; init; } = TimeSpan.FromSeconds(60);
    public TimeSpan StopGracePeriod { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>How long an ended session stays queryable (its end reason) after it ended; zero: not at all.</summary>
    public TimeSpan EndedSessionRetention { get; init; } = TimeSpan.FromHours(1);
    /// <summary>At most this many ended sessions are remembered (the oldest go first).</summary>
    public int EndedSessionMaxCount { get; init; } = 1000;
    /// <summary>Default idle timeout of a session (docs/TIMEOUTS.md); zero: sessions never end for being idle.</summary>
    public TimeSpan DefaultIdleTimeout { get; init; }
    /// <summary>Default maximum lifetime of a session; zero: unlimited.</summary>
    public TimeSpan DefaultMaxLifetime { get; init; }
    /// <summary>Default session-level exec timeout: a run longer than this ends the session (exec-timeout); zero: none.</summary>
    public TimeSpan DefaultExecTimeout { get; init; }
    /// <summary>How long before an idle or lifetime end the warning event ("idle-warning", "lifetime-warning") comes.</summary>
    public TimeSpan TimeoutWarningLead { get; init; } = TimeSpan.FromMinutes(1);
    /// <summary>Whether a paused session's time counts as idle (by default it does not: pausing stops the idle clock).</summary>
    public bool PausedCountsAsIdle { get; init; }
    /// <summary>
    /// Whether an OOM kill in a session's cgroup ends the whole session (oom-killed, with its memory limit) rather than
    /// only the process the kernel picked; a request's <see cref="Sessions.SessionRequest.EndOnOutOfMemory"/> overrides it.
    /// </summary>
    public bool EndSessionOnOutOfMemory { get; init; } = true;
    /// <summary>How often the idle, lifetime and exec timeouts are checked.</summary>
    public TimeSpan TimeoutCheckInterval { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>How often containers and sessions are compared (reaping strays, cleaning vanished ones); zero turns it off.</summary>
    public TimeSpan ReconcileInterval { get; init; } = TimeSpan.FromSeconds(60);
    public long SessionLogMaxBytes { get; init; } = 8L * 1024 * 1024;
    public long UploadMaxBytes { get; init; } = 1L << 30;
    /// <summary>How far an imported or pulled image may expand (its layers, or a compressed archive) before it is refused; null: no cap.</summary>
    public long? ImageMaxExpandedBytes { get; init; } = 64L << 30;

    // ---- Bounds on what one session can make the agent hold (docs/LIMITS.md; config section [limits]) ----
    /// <summary>Largest message the agent accepts from a session's runner; a longer one drops the connection and ends the run.</summary>
    public long RunnerMessageMaxBytes { get; init; } = Runner.Protocol.KernelRunnerClientOptions.DefaultMaxMessageSize;
    /// <summary>Run output (bytes) the runner keeps for replay after sending it (docs/DURABLE-RUNS.md).</summary>
    public long RunnerReplayBufferBytes { get; init; } = 16L * 1024 * 1024;
    /// <summary>Run output (bytes, about) the agent keeps per session for attach; the oldest output goes first.</summary>
    public long RunLogMaxBytes { get; init; } = 8L * 1024 * 1024;
    /// <summary>Runs per session whose record (and final result) stays fetchable; the oldest ended ones go first.</summary>
    public int KeptRunsPerSession { get; init; } = 32;
    /// <summary>Service ports one session may publish (image label plus request); the runner's two ports come on top.</summary>
    public int MaxServicePortsPerSession { get; init; } = 32;
    /// <summary>Largest single file, and most file data in one directory (tar) download.</summary>
    public long DownloadMaxBytes { get; init; } = 1L << 30;
    /// <summary>Most entries in one directory (tar) download.</summary>
    public int DownloadMaxEntries { get; init; } = 100_000;
    /// <summary>Most entries one directory listing returns; reading stops there and the listing says it was cut.</summary>
    public int ListMaxEntries { get; init; } = 100_000;

    /// <summary>Host paths a user may bind into a session: a source is opened from one of these without following any symlink (docs/MOUNTS.md).</summary>
    public IReadOnlyList<string> AllowedMountRoots { get; init; } = [];

    public ResourceOptions Resources { get; init; } = new();
    /// <summary>Warm pools (docs/POOL.md): none by default.</summary>
    public IReadOnlyList<Pool.PoolSpec> Pools { get; init; } = [];
    public KataOptions Kata { get; init; } = new();
}

/// <summary>How Kata VMs are sized (kata-notes §2).</summary>
public sealed record KataOptions
{
    /// <summary>Put io.katacontainers.config.hypervisor.* sizing annotations on the spec. Off by default: stock configs reject them.</summary>
    public bool SizingAnnotations { get; init; }
    /// <summary>The annotation names (after the prefix) the host's enable_annotations allows.</summary>
    public IReadOnlyList<string> AllowedAnnotations { get; init; } = ["default_vcpus", "default_memory"];
    /// <summary>Extra vCPUs for the guest beyond the allocation (guest kernel, agent).</summary>
    public double HeadroomCpus { get; init; }
    /// <summary>Guest memory beyond the allocation (guest kernel, agent, page cache).</summary>
    public long HeadroomMemoryBytes { get; init; } = 256L << 20;
}

public sealed record ResourceOptions
{
    /// <summary>Null: all host cores / memory.</summary>
    public int? TotalCpus { get; init; }
    public long? TotalMemoryBytes { get; init; }
    public int ReservedCpus { get; init; }
    /// <summary>How many times the host's (unreserved) cores sessions may ask for in total; 1 = no overcommit.</summary>
    public double CpuOvercommit { get; init; } = 1;
    public long ReservedMemoryBytes { get; init; } = 512L << 20;
    /// <summary>Host memory each Kata VM (any hypervisor) costs beyond what its guest gets (kata-notes §3: 120–160 MiB).</summary>
    public long KataVmOverheadBytes { get; init; } = 160L << 20;
    public double DefaultCpus { get; init; } = 1;
    public long DefaultMemoryBytes { get; init; } = 1L << 30;
    public long DefaultShmBytes { get; init; } = 64L << 20;
    /// <summary>Hard size of a session's work dir (a loop-mounted ext4 image, docs/DISK.md); 0: no limit (the host's disk is shared).</summary>
    public long DefaultScratchBytes { get; init; } = 16L << 30;
    public long PidsLimit { get; init; } = 4096;
}
