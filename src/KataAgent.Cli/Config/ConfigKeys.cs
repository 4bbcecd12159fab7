using Microsoft.Extensions.Logging;

namespace KataAgent.Cli.Config;

/// <summary>The config under construction; keys replace parts of it.</summary>
internal sealed class ConfigBuilder
{
    public Core.AgentOptions Agent { get; set; } = new KataAgentConfig().Agent;
    public Api.Server.ApiServerOptions Api { get; set; } = new();
    public LoggingOptions Logging { get; set; } = new();
    public BackendAiSettings BackendAi { get; set; } = new();
}

/// <summary>One documented key: section.key, its environment variable, and how it lands in the options.</summary>
internal sealed record ConfigKey(string Section, string Key, Action<ConfigBuilder, ConfigValue> Apply)
{
    public string Name => $"{Section}.{Key}";
    public string EnvironmentVariable => KataAgentConfig.EnvironmentPrefix + Section.ToUpperInvariant() + "_" + Key.ToUpperInvariant();
}

/// <summary>Every key kata-agent.toml knows; kata-agent.example.toml documents each (a test keeps the two in step).</summary>
internal static class ConfigKeys
{
    // The class names and their config-path keys come from the runtime-class table (Core/Runtime/RuntimeClassTable.cs).
    private static readonly Dictionary<string, string> RuntimeClasses =
        Core.Runtime.RuntimeClassTable.All.ToDictionary(d => d.Name, d => d.Name, StringComparer.Ordinal);

    private static readonly Dictionary<string, LogLevel> Levels = new(StringComparer.Ordinal)
    {
        ["trace"] = LogLevel.Trace, ["debug"] = LogLevel.Debug, ["info"] = LogLevel.Information,
        ["warning"] = LogLevel.Warning, ["error"] = LogLevel.Error,
    };

    private static readonly Dictionary<string, Network.Isolation.EgressPolicy> Egress = new(StringComparer.Ordinal)
    {
        ["public"] = Network.Isolation.EgressPolicy.Public, ["none"] = Network.Isolation.EgressPolicy.None,
    };

    private static readonly Dictionary<string, LogFormat> Formats = new(StringComparer.Ordinal)
    {
        ["plain"] = LogFormat.Plain, ["json"] = LogFormat.Json,
    };

    public static readonly IReadOnlyList<ConfigKey> All =
    [
        new("agent", "id", (b, v) => b.Agent = b.Agent with { AgentId = v.NonEmptyString() }),
        new("agent", "data_dir", (b, v) => b.Agent = b.Agent with { DataDir = v.Path() }),
        new("agent", "runner_dir", (b, v) => b.Agent = b.Agent with { RunnerDir = v.Path(allowEmpty: true) is { Length: > 0 } p ? p : RunnerDirectory.Default() }),
        new("agent", "allowed_capabilities", (b, v) => b.Agent = b.Agent with { AllowedCapabilities = Capabilities(v) }),
        new("agent", "allowed_mount_roots", (b, v) => b.Agent = b.Agent with { AllowedMountRoots = AbsolutePaths(v) }),
        new("agent", "upload_max", (b, v) => b.Agent = b.Agent with { UploadMaxBytes = v.Size(min: 1) }),
        new("agent", "session_log_max", (b, v) => b.Agent = b.Agent with { SessionLogMaxBytes = v.Size(min: 128 * 1024) }),

        new("limits", "runner_message_max", (b, v) => b.Agent = b.Agent with { RunnerMessageMaxBytes = v.Size(min: 64 * 1024) }),
        new("limits", "end_session_on_oom", (b, v) => b.Agent = b.Agent with { EndSessionOnOutOfMemory = v.Bool() }),
        new("limits", "ports_per_session", (b, v) => b.Agent = b.Agent with { MaxServicePortsPerSession = v.Int(0, 65535) }),
        new("limits", "download_max", (b, v) => b.Agent = b.Agent with { DownloadMaxBytes = v.Size(min: 1) }),
        new("limits", "download_max_entries", (b, v) => b.Agent = b.Agent with { DownloadMaxEntries = v.Int(1, int.MaxValue) }),
        new("limits", "list_max_entries", (b, v) => b.Agent = b.Agent with { ListMaxEntries = v.Int(1, int.MaxValue) }),
        // Durable runs (docs/DURABLE-RUNS.md).
        new("limits", "runner_replay_buffer", (b, v) => b.Agent = b.Agent with { RunnerReplayBufferBytes = v.Size(min: 64 * 1024) }),
        new("limits", "run_log_max", (b, v) => b.Agent = b.Agent with { RunLogMaxBytes = v.Size(min: 64 * 1024) }),
        new("limits", "kept_runs_per_session", (b, v) => b.Agent = b.Agent with { KeptRunsPerSession = v.Int(1, 10000) }),

        new("containerd", "address", (b, v) => b.Agent = b.Agent with { ContainerdAddress = v.Path(allowEmpty: true) is { Length: > 0 } p ? p : null }),
        new("containerd", "namespace", (b, v) => b.Agent = b.Agent with { Namespace = v.NonEmptyString() }),

        new("runtime", "default_class", (b, v) => b.Agent = b.Agent with { DefaultRuntimeClass = v.OneOf(RuntimeClasses) }),
        // Host hardening (issue 13): runc only on request.
        new("runtime", "allowed_classes", (b, v) => b.Agent = b.Agent with { AllowedRuntimeClasses = RuntimeClassList(v) }),
        .. Core.Runtime.RuntimeClassTable.All.Where(d => d.ConfigPathKey is not null).Select(RuntimeConfigPathKey),
        new("runtime", "runsc_path", (b, v) => b.Agent = b.Agent with { RunscPath = v.Path() }),
        new("runtime", "cgroup_parent", (b, v) => b.Agent = b.Agent with { CgroupParent = CgroupParent(v) }),

        new("network", "cni_plugin_dir", (b, v) => b.Agent = b.Agent with { CniPluginDir = v.Path() }),
        new("network", "name", (b, v) => b.Agent = b.Agent with { NetworkName = v.NonEmptyString() }),
        new("network", "bridge", (b, v) => b.Agent = b.Agent with { BridgeName = v.NonEmptyString() }),
        new("network", "subnet", (b, v) => b.Agent = b.Agent with { Subnet = v.NonEmptyString() }),
        new("network", "ip_masquerade", (b, v) => b.Agent = b.Agent with { IpMasquerade = v.Bool() }),
        new("network", "port_range_start", (b, v) => b.Agent = b.Agent with { PortRangeStart = v.Int(1024, 65535) }),
        new("network", "port_range_end", (b, v) => b.Agent = b.Agent with { PortRangeEnd = v.Int(1024, 65535) }),
        new("network", "netns_prefix", (b, v) => b.Agent = b.Agent with { NetnsPrefix = v.NonEmptyString() }),
        new("network", "egress", (b, v) => b.Agent = b.Agent with { DefaultEgress = v.OneOf(Egress) }),
        new("network", "deny_cidrs", (b, v) => b.Agent = b.Agent with { DenyCidrs = Cidrs(v) }),
        new("network", "dns", (b, v) => b.Agent = b.Agent with { Dns = Ipv4Addresses(v) }),
        new("network", "service_bind_host", (b, v) => b.Agent = b.Agent with { ServiceBindHost = v.NonEmptyString() }),

        new("resources", "total_cpus", (b, v) => b.Agent = b.Agent with { Resources = b.Agent.Resources with { TotalCpus = v.Int(0, 4096) is var n && n > 0 ? n : null } }),
        new("resources", "total_memory", (b, v) => b.Agent = b.Agent with { Resources = b.Agent.Resources with { TotalMemoryBytes = v.IsEmpty ? null : v.Size() is var n && n > 0 ? n : null } }),
        new("resources", "reserved_cpus", (b, v) => b.Agent = b.Agent with { Resources = b.Agent.Resources with { ReservedCpus = v.Int(0, 4096) } }),
        new("resources", "cpu_overcommit", (b, v) => b.Agent = b.Agent with { Resources = b.Agent.Resources with { CpuOvercommit = v.Double(1, 64) } }),
        new("resources", "reserved_memory", (b, v) => b.Agent = b.Agent with { Resources = b.Agent.Resources with { ReservedMemoryBytes = v.Size() } }),
        new("resources", "kata_vm_overhead", (b, v) => b.Agent = b.Agent with { Resources = b.Agent.Resources with { KataVmOverheadBytes = v.Size() } }),
        new("resources", "default_cpus", (b, v) => b.Agent = b.Agent with { Resources = b.Agent.Resources with { DefaultCpus = v.Double(0.01, 4096) } }),
        new("resources", "default_memory", (b, v) => b.Agent = b.Agent with { Resources = b.Agent.Resources with { DefaultMemoryBytes = v.Size(min: 16L << 20) } }),
        new("resources", "default_shm", (b, v) => b.Agent = b.Agent with { Resources = b.Agent.Resources with { DefaultShmBytes = v.Size() } }),
        new("resources", "default_scratch", (b, v) => b.Agent = b.Agent with { Resources = b.Agent.Resources with { DefaultScratchBytes = ScratchSize(v) } }),
        new("resources", "pids_limit", (b, v) => b.Agent = b.Agent with { Resources = b.Agent.Resources with { PidsLimit = v.Long(16) } }),

        new("images", "max_expanded", (b, v) => b.Agent = b.Agent with { ImageMaxExpandedBytes = v.Size() is var n && n > 0 ? n : null }),

        new("timeouts", "runner_ready", (b, v) => b.Agent = b.Agent with { RunnerReadyTimeout = v.Duration(TimeSpan.FromSeconds(1)) }),
        new("timeouts", "stop_grace", (b, v) => b.Agent = b.Agent with { StopGracePeriod = v.Duration() }),
        new("timeouts", "idle", (b, v) => b.Agent = b.Agent with { DefaultIdleTimeout = v.Duration() }),
        new("timeouts", "max_lifetime", (b, v) => b.Agent = b.Agent with { DefaultMaxLifetime = v.Duration() }),
        new("timeouts", "exec", (b, v) => b.Agent = b.Agent with { DefaultExecTimeout = v.Duration() }),
        new("timeouts", "warning_lead", (b, v) => b.Agent = b.Agent with { TimeoutWarningLead = v.Duration() }),
        new("timeouts", "paused_counts_as_idle", (b, v) => b.Agent = b.Agent with { PausedCountsAsIdle = v.Bool() }),
        new("timeouts", "check_interval", (b, v) => b.Agent = b.Agent with { TimeoutCheckInterval = v.Duration(TimeSpan.FromMilliseconds(100)) }),
        new("timeouts", "ended_session_retention", (b, v) => b.Agent = b.Agent with { EndedSessionRetention = v.Duration() }),
        new("limits", "ended_sessions", (b, v) => b.Agent = b.Agent with { EndedSessionMaxCount = v.Int(0, 1_000_000) }),
        new("timeouts", "reconcile_interval", (b, v) => b.Agent = b.Agent with { ReconcileInterval = v.Duration() }),
        new("timeouts", "shutdown", (b, v) => b.Api = b.Api with { ShutdownTimeout = v.Duration() }),

        new("kata", "sizing_annotations", (b, v) => b.Agent = b.Agent with { Kata = b.Agent.Kata with { SizingAnnotations = v.Bool() } }),
        new("kata", "allowed_annotations", (b, v) => b.Agent = b.Agent with { Kata = b.Agent.Kata with { AllowedAnnotations = v.StringList() } }),
        new("kata", "headroom_cpus", (b, v) => b.Agent = b.Agent with { Kata = b.Agent.Kata with { HeadroomCpus = v.Double(0, 64) } }),
        new("kata", "headroom_memory", (b, v) => b.Agent = b.Agent with { Kata = b.Agent.Kata with { HeadroomMemoryBytes = v.Size() } }),

        new("api", "socket", (b, v) => b.Api = b.Api with { SocketPath = v.Path() }),
        new("api", "socket_group", (b, v) => b.Api = b.Api with { SocketGroup = v.String() }),
        new("api", "tcp_listen", (b, v) => b.Api = b.Api with { TcpListen = v.String() }),
        new("api", "token", (b, v) => b.Api = b.Api with { Token = v.String() }),
        new("api", "token_file", (b, v) => b.Api = b.Api with { Token = ReadToken(v) }),
        new("api", "tls_cert", (b, v) => b.Api = b.Api with { TlsCertificatePath = ExistingFile(v) }),
        new("api", "tls_key", (b, v) => b.Api = b.Api with { TlsKeyPath = ExistingFile(v) }),

        new("logging", "level", (b, v) => b.Logging = b.Logging with { Level = v.OneOf(Levels) }),
        new("logging", "format", (b, v) => b.Logging = b.Logging with { Format = v.OneOf(Formats) }),

        new("metrics", "listen", (b, v) => b.Api = b.Api with { MetricsListen = v.String() }),

        // Backend.AI cluster membership (issue 17): on when etcd_endpoints is set.
        new("backendai", "etcd_endpoints", (b, v) => b.BackendAi = b.BackendAi with { EtcdEndpoints = HttpEndpoints(v) }),
        new("backendai", "namespace", (b, v) => b.BackendAi = b.BackendAi with { Namespace = v.NonEmptyString() }),
        new("backendai", "agent_id", (b, v) => b.BackendAi = b.BackendAi with { AgentId = v.String() }),
        new("backendai", "region", (b, v) => b.BackendAi = b.BackendAi with { Region = v.String() }),
        new("backendai", "scaling_group", (b, v) => b.BackendAi = b.BackendAi with { ScalingGroup = v.NonEmptyString() }),
        new("backendai", "rpc_listen", (b, v) => b.BackendAi = b.BackendAi with { RpcListen = HostPort(v, allowEmpty: false) }),
        new("backendai", "rpc_advertised", (b, v) => b.BackendAi = b.BackendAi with { RpcAdvertised = HostPort(v, allowEmpty: true) }),
        new("backendai", "public_host", (b, v) => b.BackendAi = b.BackendAi with { PublicHost = v.String() }),
        new("backendai", "agent_keypair", (b, v) => b.BackendAi = b.BackendAi with { AgentKeypair = ExistingFile(v) }),
        new("backendai", "manager_public_key", (b, v) => b.BackendAi = b.BackendAi with { ManagerPublicKey = ExistingFile(v) }),
        new("backendai", "heartbeat_interval", (b, v) => b.BackendAi = b.BackendAi with { HeartbeatInterval = v.Duration(TimeSpan.FromMilliseconds(100)) }),
        new("backendai", "status_heartbeat_interval", (b, v) => b.BackendAi = b.BackendAi with { StatusHeartbeatInterval = v.Duration(TimeSpan.FromMilliseconds(100)) }),
        new("backendai", "skip_manager_detection", (b, v) => b.BackendAi = b.BackendAi with { SkipManagerDetection = v.Bool() }),
        new("backendai", "manager_wait_timeout", (b, v) => b.BackendAi = b.BackendAi with { ManagerWaitTimeout = v.IsEmpty ? null : v.Duration(TimeSpan.FromSeconds(1)) }),
        new("backendai", "runtime_class", (b, v) => b.BackendAi = b.BackendAi with { RuntimeClass = v.IsEmpty ? null : v.OneOf(RuntimeClasses) }),
        new("backendai", "runtime_class_by_scaling_group", (b, v) => b.BackendAi = b.BackendAi with { RuntimeClassByScalingGroup = Pairs(v, RuntimeClasses) }),
        new("backendai", "runtime_class_by_image", (b, v) => b.BackendAi = b.BackendAi with { RuntimeClassByImage = Pairs(v, RuntimeClasses) }),
        new("backendai", "image_names", (b, v) => b.BackendAi = b.BackendAi with { ImageNames = Pairs(v, null) }),
    ];

    public static readonly IReadOnlyDictionary<string, IReadOnlyDictionary<string, ConfigKey>> BySection =
        All.GroupBy(k => k.Section).ToDictionary(g => g.Key, g => (IReadOnlyDictionary<string, ConfigKey>)g.ToDictionary(k => k.Key, StringComparer.Ordinal),
            StringComparer.Ordinal);

    // 0 turns the scratch disk off; anything else must fit ext4's metadata.
    private static long ScratchSize(ConfigValue v)
    {
        var size = v.Size();
        if (size != 0 && size < Core.ScratchQuota.ScratchDisks.MinimumBytes)
            throw new FormatException($"{v.Key} ({v.Source}): {size} bytes is below the {Core.ScratchQuota.ScratchDisks.MinimumBytes >> 20} MiB minimum (0 turns the limit off)");
        return size;
    }

    private static List<string> HttpEndpoints(ConfigValue v)
    {
        var list = v.StringList().ToList();
        foreach (var endpoint in list)
        {
            if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https") || uri.Port <= 0)
                throw new FormatException($"{v.Key} ({v.Source}): '{endpoint}' is not an etcd client URL like http://127.0.0.1:2379");
        }
        return list;
    }

    private static string HostPort(ConfigValue v, bool allowEmpty)
    {
        var text = v.String();
        if (text.Length == 0 && allowEmpty)
            return text;
        var colon = text.LastIndexOf(':');
        return colon > 0 && int.TryParse(text[(colon + 1)..], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var port) && port <= 65535
            ? text
            : throw new FormatException($"{v.Key} ({v.Source}): '{text}' is not host:port (e.g. 0.0.0.0:6001)");
    }

    /// <summary>"name=value" items (a TOML array, or comma-separated text); values checked against <paramref name="allowed"/> when given.</summary>
    private static Dictionary<string, string> Pairs(ConfigValue v, IReadOnlyDictionary<string, string>? allowed)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var item in v.StringList())
        {
            var equals = item.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0 || equals == item.Length - 1)
                throw new FormatException($"{v.Key} ({v.Source}): '{item}' is not name=value");
            var (name, value) = (item[..equals].Trim(), item[(equals + 1)..].Trim());
            if (allowed is not null && !allowed.ContainsKey(value))
                throw new FormatException($"{v.Key} ({v.Source}): '{value}' is not a runtime class ({Core.Runtime.RuntimeClassTable.Names})");
            map[name] = value;
        }
        return map;
    }

    private static List<string> AbsolutePaths(ConfigValue v)
    {
        var list = v.StringList().ToList();
        foreach (var p in list)
        {
            if (!Path.IsPathRooted(p))
                throw new FormatException($"{v.Key} ({v.Source}): '{p}' is not an absolute path");
        }
        return list;
    }

    private static List<string> Cidrs(ConfigValue v)
    {
        var list = v.StringList().ToList();
        foreach (var cidr in list)
        {
            try
            {
                Network.Isolation.NetworkGuard.ParseCidr(cidr);
            }
            catch (ArgumentException e)
            {
                throw new FormatException($"{v.Key} ({v.Source}): {e.Message}");
            }
        }
        return list;
    }

    private static List<string> Ipv4Addresses(ConfigValue v)
    {
        var list = v.StringList().ToList();
        foreach (var address in list)
        {
            if (!System.Net.IPAddress.TryParse(address, out var ip) || ip.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
                throw new FormatException($"{v.Key} ({v.Source}): '{address}' is not an IPv4 address");
        }
        return list;
    }

    /// <summary>runtime.&lt;class&gt;_config_path: the class's config file; empty: the class's default.</summary>
    private static ConfigKey RuntimeConfigPathKey(Core.Runtime.RuntimeClassDefinition definition) =>
        new("runtime", definition.ConfigPathKey!, (b, v) =>
        {
            var paths = new Dictionary<string, string>(b.Agent.RuntimeConfigPaths, StringComparer.Ordinal);
            if (v.Path(allowEmpty: true) is { Length: > 0 } path)
                paths[definition.Name] = path;
            else
                paths.Remove(definition.Name);
            b.Agent = b.Agent with { RuntimeConfigPaths = paths };
        });

    private static List<string> RuntimeClassList(ConfigValue v)
    {
        var list = v.StringList().ToList();
        foreach (var name in list.Where(n => !RuntimeClasses.ContainsKey(n)))
            throw new FormatException($"{v.Key} ({v.Source}): '{name}' is not a runtime class ({Core.Runtime.RuntimeClassTable.Names})");
        return list.Count > 0 ? list : throw new FormatException($"{v.Key} ({v.Source}): empty: list the classes sessions may use, e.g. [\"kata\", \"gvisor\"]");
    }

    private static List<string> Capabilities(ConfigValue v)
    {
        var list = v.StringList().ToList();
        foreach (var cap in list)
        {
            if (!cap.StartsWith("CAP_", StringComparison.Ordinal) || cap.Length < 5 || !cap[4..].All(c => c is (>= 'A' and <= 'Z') or '_'))
                throw new FormatException($"{v.Key} ({v.Source}): '{cap}' is not a capability name such as CAP_NET_RAW");
        }
        return list;
    }

    private static string CgroupParent(ConfigValue v)
    {
        var path = v.NonEmptyString();
        try
        {
            return "/" + string.Join('/', Core.Cgroups.SessionCgroupParent.ParsePath(path));
        }
        catch (ArgumentException e)
        {
            throw new FormatException($"{v.Key} ({v.Source}): {e.Message.Split(" (Parameter", 2)[0]}");
        }
    }

    private static string ExistingFile(ConfigValue v)
    {
        var path = v.Path(allowEmpty: true);
        return path.Length == 0 || File.Exists(path) ? path : throw new FormatException($"{v.Key} ({v.Source}): {path} does not exist");
    }

    private static string ReadToken(ConfigValue v)
    {
        var path = v.Path(allowEmpty: true);
        if (path.Length == 0)
            return "";
        try
        {
            var token = File.ReadAllText(path).Trim();
            return token.Length > 0 ? token : throw new FormatException($"{v.Key} ({v.Source}): {path} is empty");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FormatException($"{v.Key} ({v.Source}): cannot read {path}: {e.Message}");
        }
    }
}
