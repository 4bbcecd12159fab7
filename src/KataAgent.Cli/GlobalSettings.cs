using System.CommandLine;
using KataAgent.Cli.Config;

namespace KataAgent.Cli;

/// <summary>Options every command takes.</summary>
internal static class GlobalOptions
{
    public static readonly Option<string?> Config = new("--config")
    {
        Description = $"Config file (default: ${KataAgentConfig.ConfigEnvironmentVariable}, else {KataAgentConfig.DefaultPath} if present)",
        Recursive = true,
    };

    public static readonly Option<string?> Socket = new("--socket")
    {
        Description = "Unix socket of a running serve (default: api.socket from the config)",
        Recursive = true,
    };

    public static readonly Option<string?> Address = new("--address")
    {
        Description = "Talk to a serve over TCP instead, e.g. http://127.0.0.1:7443 (token: api.token / $KATA_AGENT_API_TOKEN)",
        Recursive = true,
    };

    public static readonly Option<bool> Verbose = new("--verbose")
    {
        Description = "Log what the agent does (for `run`: the in-process agent's log on stderr) and show stack traces of failures",
        Recursive = true,
    };

    public static readonly Option<bool> Json = new("--json") { Description = "Print machine-readable JSON instead of a table" };
}

/// <summary>The global options as parsed for one invocation.</summary>
internal sealed class GlobalSettings(ParseResult parse)
{
    private KataAgentConfig? _config;

    public string? ConfigPath => parse.GetValue(GlobalOptions.Config);
    public string? Socket => parse.GetValue(GlobalOptions.Socket);
    public string? Address => parse.GetValue(GlobalOptions.Address);
    public bool Verbose => parse.GetValue(GlobalOptions.Verbose);

    public KataAgentConfig LoadConfig()
    {
        if (_config is not null)
            return _config;
        var config = KataAgentConfig.Load(ConfigPath);
        if (Socket is { Length: > 0 } socket)
            config = config with { Api = config.Api with { SocketPath = Path.GetFullPath(socket) } };
        return _config = config;
    }
}
