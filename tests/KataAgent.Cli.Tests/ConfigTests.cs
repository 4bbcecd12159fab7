using KataAgent.Cli.Config;

namespace KataAgent.Cli.Tests;

public sealed class ConfigTests
{
    private static readonly Dictionary<string, string> NoEnvironment = new(StringComparer.Ordinal);

    private static KataAgentConfig Parse(string toml, Dictionary<string, string>? env = null) =>
        KataAgentConfig.Parse(toml, "test.toml", env ?? NoEnvironment);

    private static string Problem(string toml, Dictionary<string, string>? env = null) =>
        Assert.Single(Assert.Throws<ConfigException>(() => Parse(toml, env)).Problems);

    [Fact]
    public void Defaults_apply_without_a_file()
    {
        var config = KataAgentConfig.Parse(null, null, NoEnvironment);
        Assert.Equal("/var/lib/kata-agent", config.Agent.DataDir);
        Assert.Equal("kata", config.Agent.DefaultRuntimeClass);
        Assert.Null(config.Agent.ContainerdAddress);
        Assert.Equal("/run/kata-agent/kata-agent.sock", config.Api.SocketPath);
        Assert.False(string.IsNullOrEmpty(config.Agent.RunnerDir));
    }

    [Fact]
    public void File_values_land_in_the_options_and_the_environment_beats_the_file()
    {
        var config = Parse("""
            [agent]
            data_dir = "/srv/ka"
            allowed_mount_roots = ["/data", "/srv/shared"]
            [runtime]
            default_class = "gvisor"
            [network]
            ip_masquerade = false
            port_range_start = 40000
            port_range_end = 40100
            [resources]
            default_memory = "2GiB"
            default_cpus = 0.5
            [timeouts]
            runner_ready = "2m"
            [api]
            tcp_listen = "127.0.0.1:7443"
            token = "secret"
            [logging]
            format = "json"
            """, new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["KATA_AGENT_RUNTIME_DEFAULT_CLASS"] = "runc",
                ["KATA_AGENT_RUNTIME_ALLOWED_CLASSES"] = "kata,gvisor,runc",
                ["KATA_AGENT_NETWORK_PORT_RANGE_END"] = "40200",
                ["KATA_AGENT_AGENT_ALLOWED_MOUNT_ROOTS"] = "/a,/b",
            });
        Assert.Equal("/srv/ka", config.Agent.DataDir);
        Assert.Equal("runc", config.Agent.DefaultRuntimeClass);
        Assert.False(config.Agent.IpMasquerade);
        Assert.Equal(40000, config.Agent.PortRangeStart);
        Assert.Equal(40200, config.Agent.PortRangeEnd);
        Assert.Equal(["/a", "/b"], config.Agent.AllowedMountRoots);
        Assert.Equal(2L << 30, config.Agent.Resources.DefaultMemoryBytes);
        Assert.Equal(0.5, config.Agent.Resources.DefaultCpus);
        Assert.Equal(TimeSpan.FromMinutes(2), config.Agent.RunnerReadyTimeout);
        Assert.Equal("secret", config.Api.Token);
        Assert.Equal(LogFormat.Json, config.Logging.Format);
    }

    [Theory]
    [InlineData("[network]\nport_range_start = 80", "network.port_range_start")]
    [InlineData("[network]\nport_range_start = \"many\"", "network.port_range_start")]
    [InlineData("[runtime]\ndefault_class = \"docker\"", "runtime.default_class")]
    [InlineData("[agent]\ndata_dir = \"relative/dir\"", "agent.data_dir")]
    [InlineData("[resources]\ndefault_memory = \"lots\"", "resources.default_memory")]
    [InlineData("[timeouts]\nrunner_ready = \"soon\"", "timeouts.runner_ready")]
    [InlineData("[network]\nip_masquerade = \"maybe\"", "network.ip_masquerade")]
    [InlineData("[network]\nsubnet = \"10.0.0.1/24\"", "network.subnet")]
    [InlineData("[network]\nbridge = \"a-very-long-bridge-name\"", "network.bridge")]
    [InlineData("[network]\nport_range_start = 31000\nport_range_end = 30000", "network.port_range_start")]
    [InlineData("[api]\ntcp_listen = \"127.0.0.1:7443\"", "api.tcp_listen")]
    [InlineData("[api]\ntcp_listen = \"nowhere\"\ntoken = \"t\"", "api.tcp_listen")]
    [InlineData("[network]\nbrige = \"x\"", "network.brige")]
    [InlineData("[netwrok]\nbridge = \"x\"", "[netwrok]")]
    [InlineData("[logging]\nlevel = \"loud\"", "logging.level")]
    public void A_bad_value_names_its_key_and_the_problem(string toml, string key)
    {
        var problem = Problem(toml);
        Assert.Contains(key, problem, StringComparison.Ordinal);
    }

    [Fact]
    public void A_bad_environment_override_names_the_variable()
    {
        var problem = Problem("", new Dictionary<string, string>(StringComparer.Ordinal) { ["KATA_AGENT_NETWORK_IP_MASQUERADE"] = "perhaps" });
        Assert.Contains("network.ip_masquerade", problem, StringComparison.Ordinal);
        Assert.Contains("$KATA_AGENT_NETWORK_IP_MASQUERADE", problem, StringComparison.Ordinal);
    }

    [Fact]
    public void Invalid_toml_and_a_missing_file_are_reported()
    {
        Assert.Contains("not valid TOML", Problem("[agent\nid = 1"), StringComparison.Ordinal);
        var missing = Assert.Throws<ConfigException>(() => KataAgentConfig.Load("/nonexistent/kata-agent.toml", NoEnvironment));
        Assert.Contains("does not exist", missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_problem_is_reported_at_once()
    {
        var e = Assert.Throws<ConfigException>(() => Parse("[network]\nport_range_start = 1\nip_masquerade = 3\n[agent]\nunknown = 1"));
        Assert.Equal(3, e.Problems.Count);
    }

    [Fact]
    public void The_example_file_parses_and_documents_every_key()
    {
        var path = Path.Combine(RepositoryRoot(), "kata-agent.example.toml");
        var text = File.ReadAllText(path);
        KataAgentConfig.Parse(text, path, NoEnvironment);
        // Uncommenting every documented key must give a valid config that uses each key the loader knows.
        var uncommented = string.Join('\n', text.Split('\n').Select(l => System.Text.RegularExpressions.Regex.IsMatch(l, "^# [a-z_]+ = ") ? l[2..] : l));
        uncommented = uncommented.Replace("id = \"<hostname>\"", "id = \"host\"", StringComparison.Ordinal);
        KataAgentConfig.Parse(uncommented, path, NoEnvironment);
        string? section = null;
        var documented = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in uncommented.Split('\n'))
        {
            if (line.StartsWith('['))
                section = line.Trim('[', ']', ' ');
            else if (section is not null && System.Text.RegularExpressions.Regex.Match(line, "^([a-z_]+) = ") is { Success: true } m)
                documented.Add($"{section}.{m.Groups[1].Value}");
        }
        Assert.Equal(ConfigKeys.All.Select(k => k.Name).Order(StringComparer.Ordinal), documented.Order(StringComparer.Ordinal));
    }

    [Theory]
    [InlineData("512MiB", 512L << 20)]
    [InlineData("1g", 1L << 30)]
    [InlineData("64m", 64L << 20)]
    [InlineData("1.5GiB", 3L << 29)]
    [InlineData("4096", 4096)]
    public void Sizes_parse(string text, long bytes)
    {
        Assert.True(Sizes.TryParse(text, out var parsed));
        Assert.Equal(bytes, parsed);
    }

    private static string RepositoryRoot()
    {
        var dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "KataAgent.slnx")))
            dir = Path.GetDirectoryName(dir);
        return dir ?? throw new InvalidOperationException("not run from a checkout");
    }
}
