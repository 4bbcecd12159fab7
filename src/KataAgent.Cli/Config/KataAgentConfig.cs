using System.Net;
using System.Net.Sockets;
using KataAgent.Api.Server;
using KataAgent.Core;
using Tomlyn;
using Tomlyn.Model;

namespace KataAgent.Cli.Config;

public enum LogFormat
{
    Plain,
    Json,
}

public sealed record LoggingOptions
{
    public Microsoft.Extensions.Logging.LogLevel Level { get; init; } = Microsoft.Extensions.Logging.LogLevel.Information;
    public LogFormat Format { get; init; } = LogFormat.Plain;
}

/// <summary>Everything kata-agent.toml configures: the core's options, the API server's, logging.</summary>
public sealed record KataAgentConfig
{
    public const string DefaultPath = "/etc/kata-agent/kata-agent.toml";
    public const string ConfigEnvironmentVariable = "KATA_AGENT_CONFIG";
    public const string EnvironmentPrefix = "KATA_AGENT_";

    public AgentOptions Agent { get; init; } = new() { RunnerDir = RunnerDirectory.Default() };
    public ApiServerOptions Api { get; init; } = new();
    public LoggingOptions Logging { get; init; } = new();
    /// <summary>How to join a Backend.AI cluster; null: not configured ([backendai] etcd_endpoints empty).</summary>
    public BackendAi.Hosting.BackendAiOptions? BackendAi { get; init; }
    /// <summary>The file read, or null when none was (defaults and environment only).</summary>
    public string? SourcePath { get; init; }

    /// <summary>
    /// Reads the config: the file (explicit <paramref name="path"/>, else $KATA_AGENT_CONFIG, else /etc/kata-agent/kata-agent.toml when it
    /// exists), then KATA_AGENT_&lt;SECTION&gt;_&lt;KEY&gt; environment overrides, then cross-checks. Every problem names its key.
    /// </summary>
    public static KataAgentConfig Load(string? path, IReadOnlyDictionary<string, string>? environment = null)
    {
        environment ??= CurrentEnvironment();
        var explicitPath = path ?? (environment.TryGetValue(ConfigEnvironmentVariable, out var fromEnv) && fromEnv.Length > 0 ? fromEnv : null);
        string? text = null;
        if (explicitPath is not null)
        {
            if (!File.Exists(explicitPath))
                throw new ConfigException([$"config file {explicitPath} does not exist (a commented example: kata-agent.example.toml in the repository)"]);
            text = File.ReadAllText(explicitPath);
        }
        else if (File.Exists(DefaultPath))
        {
            explicitPath = DefaultPath;
            text = File.ReadAllText(DefaultPath);
        }
        return Parse(text, explicitPath, environment);
    }

    public static KataAgentConfig Parse(string? tomlText, string? sourceName, IReadOnlyDictionary<string, string> environment)
    {
        var problems = new List<string>();
        var builder = new ConfigBuilder();
        if (tomlText is not null)
        {
            TomlTable root;
            try
            {
                root = TomlSerializer.Deserialize<TomlTable>(tomlText) ?? new TomlTable();
            }
            catch (TomlException e)
            {
                throw new ConfigException([$"{sourceName ?? "config"}: not valid TOML: {e.Message}"]);
            }
            foreach (var (section, value) in root)
            {
                if (section == PoolConfig.Section && value is TomlTableArray pools)
                {
                    builder.Agent = builder.Agent with { Pools = PoolConfig.Parse(pools, sourceName ?? "config", problems) };
                    continue;
                }
                if (value is not TomlTable table)
                {
                    problems.Add($"{section} ({sourceName}): top-level keys are not used; put it in a section such as [{Sections.First()}]");
                    continue;
                }
                if (!ConfigKeys.BySection.TryGetValue(section, out var keys))
                {
                    problems.Add($"[{section}] ({sourceName}): unknown section (known: {string.Join(", ", Sections)})");
                    continue;
                }
                foreach (var (key, raw) in table)
                {
                    var name = $"{section}.{key}";
                    if (!keys.TryGetValue(key, out var def))
                    {
                        problems.Add($"{name} ({sourceName}): unknown key (known in [{section}]: {string.Join(", ", keys.Keys)})");
                        continue;
                    }
                    Apply(builder, def, new ConfigValue(name, raw, sourceName ?? "config"), problems);
                }
            }
        }
        foreach (var def in ConfigKeys.All)
        {
            if (environment.TryGetValue(def.EnvironmentVariable, out var raw))
                Apply(builder, def, new ConfigValue(def.Name, raw, "$" + def.EnvironmentVariable), problems);
        }
        if (problems.Count == 0)
            CrossCheck(builder, problems);
        if (problems.Count > 0)
            throw new ConfigException(problems);
        return new KataAgentConfig
        {
            Agent = builder.Agent, Api = builder.Api, Logging = builder.Logging, SourcePath = sourceName,
            BackendAi = builder.BackendAi.ToOptions(builder.Agent.AgentId),
        };
    }

    public static IEnumerable<string> Sections => ConfigKeys.BySection.Keys;

    private static void Apply(ConfigBuilder builder, ConfigKey def, ConfigValue value, List<string> problems)
    {
        try
        {
            def.Apply(builder, value);
        }
        catch (FormatException e)
        {
            problems.Add(e.Message);
        }
    }

    private static void CrossCheck(ConfigBuilder b, List<string> problems)
    {
        var a = b.Agent;
        if (a.PortRangeStart >= a.PortRangeEnd)
            problems.Add($"network.port_range_start ({a.PortRangeStart}) must be below network.port_range_end ({a.PortRangeEnd})");
        if (!TryParseSubnet(a.Subnet, out var problem))
            problems.Add($"network.subnet: '{a.Subnet}' {problem}");
        if (a.BridgeName.Length > 15)
            problems.Add($"network.bridge: '{a.BridgeName}' is longer than 15 characters (a Linux interface name limit)");
        if (!IPAddress.TryParse(a.ServiceBindHost, out _))
            problems.Add($"network.service_bind_host: '{a.ServiceBindHost}' is not an IP address");
        if (!string.IsNullOrEmpty(b.Api.TcpListen) && string.IsNullOrEmpty(b.Api.Token))
            problems.Add("api.tcp_listen is set but neither api.token nor api.token_file gives a token: TCP clients must present one");
        if (string.IsNullOrEmpty(b.Api.TlsCertificatePath) != string.IsNullOrEmpty(b.Api.TlsKeyPath))
            problems.Add("api.tls_cert and api.tls_key go together: set both or neither");
        foreach (var (key, endpoint) in new[] { ("api.tcp_listen", b.Api.TcpListen), ("metrics.listen", b.Api.MetricsListen) })
        {
            if (string.IsNullOrEmpty(endpoint))
                continue;
            try
            {
                ApiServer.ParseEndpoint(endpoint, key);
            }
            catch (ArgumentException e)
            {
                problems.Add(e.Message);
            }
        }
        if (!a.AllowedRuntimeClasses.Contains(a.DefaultRuntimeClass, StringComparer.Ordinal))
            problems.Add($"runtime.default_class '{a.DefaultRuntimeClass}' is not in runtime.allowed_classes ({string.Join(", ", a.AllowedRuntimeClasses)}): add it there or choose another default");
        if (a.Resources.ReservedCpus < 0)
            problems.Add("resources.reserved_cpus must not be negative");
    }

    private static bool TryParseSubnet(string subnet, out string problem)
    {
        problem = "";
        var slash = subnet.IndexOf('/', StringComparison.Ordinal);
        if (slash < 0 || !IPAddress.TryParse(subnet[..slash], out var ip) || ip.AddressFamily != AddressFamily.InterNetwork
            || !int.TryParse(subnet[(slash + 1)..], out var prefix) || prefix is < 8 or > 30)
        {
            problem = "is not an IPv4 CIDR like 10.88.64.0/20 (prefix 8 to 30)";
            return false;
        }
        var bits = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(ip.GetAddressBytes());
        if ((bits & ~(uint.MaxValue << (32 - prefix))) != 0)
        {
            problem = "has host bits set (use the network address)";
            return false;
        }
        return true;
    }

    private static Dictionary<string, string> CurrentEnvironment()
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            if (entry.Key is string key && key.StartsWith(EnvironmentPrefix, StringComparison.Ordinal) && entry.Value is string value)
                env[key] = value;
        }
        return env;
    }
}

/// <summary>Where the published kernel runner is, unless runner_dir says.</summary>
public static class RunnerDirectory
{
    public const string Installed = "/usr/lib/kata-agent/runner";

    /// <summary>`runner` next to the executable; else artifacts/runner of the checkout it runs from; else /usr/lib/kata-agent/runner.</summary>
    public static string Default()
    {
        var beside = Path.Combine(AppContext.BaseDirectory, "runner");
        if (File.Exists(Path.Combine(beside, "kata-runner")))
            return beside;
        for (var dir = AppContext.BaseDirectory; dir is not null; dir = Path.GetDirectoryName(dir))
        {
            if (File.Exists(Path.Combine(dir, "KataAgent.slnx")))
            {
                var artifacts = Path.Combine(dir, "artifacts", "runner");
                if (File.Exists(Path.Combine(artifacts, "kata-runner")))
                    return artifacts;
                break;
            }
        }
        return Installed;
    }
}
