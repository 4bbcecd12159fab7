using System.Text.Json;

namespace KataAgent.Runner;

/// <summary>
/// Everything the agent tells the runner, read from the session's config dir (see README.md).
/// Missing files mean defaults; malformed ones are an error at start-up.
/// </summary>
internal sealed class RunnerConfig
{
    public const string DefaultConfigDir = "/home/config";
    public const string ConfigDirEnvironmentVariable = "KATA_RUNNER_CONFIG_DIR";
    public const string CurveKeyFile = "runner-curve.json";

    public required string ConfigDir { get; init; }
    public string RuntimeType { get; init; } = "python";
    public string RuntimePath { get; init; } = "/usr/bin/python3";
    public string WorkDir { get; init; } = "/home/work";
    public string BindHost { get; init; } = "*";
    public int InboundPort { get; init; } = 2000;
    public int OutboundPort { get; init; } = 2001;
    public int? Uid { get; init; }
    public int? Gid { get; init; }
    public string? BootstrapScript { get; init; }
    public TimeSpan BootstrapTimeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Backend.AI service definitions, one &lt;name&gt;.json per service app.</summary>
    public string ServiceDefsDir { get; init; } = "/etc/backend.ai/service-defs";

    /// <summary>From runner-curve.json: the runner's CURVE secret key (Z85); null means the NULL mechanism.</summary>
    public string? CurveSecretKey { get; init; }

    /// <summary>Environment for every process the runner starts: its own, overridden by environ.txt.</summary>
    public required IReadOnlyDictionary<string, string> ChildEnvironment { get; init; }

    public bool HasInterpreter => RuntimeType == "python";

    public static RunnerConfig Load(string configDir)
    {
        if (!Directory.Exists(configDir))
        {
            throw new InvalidDataException($"config dir {configDir} does not exist");
        }
        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            string key = (string)entry.Key;
            if (key != ConfigDirEnvironmentVariable)
            {
                environment[key] = (string?)entry.Value ?? "";
            }
        }
        string environPath = Path.Combine(configDir, "environ.txt");
        if (File.Exists(environPath))
        {
            foreach ((string key, string value) in ParseEnviron(File.ReadAllText(environPath)))
            {
                environment[key] = value;
            }
        }

        string settingsPath = Path.Combine(configDir, "runner.json");
        string defaultBootstrap = Path.Combine(configDir, "bootstrap.sh");
        // Read here, before the uid switch: the file is root's alone (0600).
        string? curveSecretKey = LoadCurveSecretKey(Path.Combine(configDir, CurveKeyFile));
        var config = new RunnerConfig
        {
            ConfigDir = configDir,
            ChildEnvironment = environment,
            BootstrapScript = File.Exists(defaultBootstrap) ? defaultBootstrap : null,
            CurveSecretKey = curveSecretKey,
        };
        if (!File.Exists(settingsPath))
        {
            return config;
        }
        try
        {
            using JsonDocument document = JsonDocument.Parse(File.ReadAllText(settingsPath));
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException("the top level must be a JSON object");
            }
            string? bootstrap = OptionalString(root, "bootstrap");
            return new RunnerConfig
            {
                ConfigDir = configDir,
                ChildEnvironment = environment,
                RuntimeType = OptionalString(root, "runtimeType") ?? config.RuntimeType,
                RuntimePath = OptionalString(root, "runtimePath") ?? config.RuntimePath,
                WorkDir = OptionalString(root, "workDir") ?? config.WorkDir,
                BindHost = OptionalString(root, "bindHost") ?? config.BindHost,
                InboundPort = OptionalInt(root, "replInPort") ?? config.InboundPort,
                OutboundPort = OptionalInt(root, "replOutPort") ?? config.OutboundPort,
                Uid = OptionalInt(root, "uid"),
                Gid = OptionalInt(root, "gid"),
                BootstrapScript = bootstrap is null ? config.BootstrapScript
                    : Path.IsPathRooted(bootstrap) ? bootstrap : Path.Combine(configDir, bootstrap),
                BootstrapTimeout = TimeSpan.FromSeconds(OptionalInt(root, "bootstrapTimeoutSeconds") ?? 600),
                ServiceDefsDir = OptionalString(root, "serviceDefsDir") ?? config.ServiceDefsDir,
                CurveSecretKey = curveSecretKey,
            };
        }
        catch (Exception exception) when (exception is JsonException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{settingsPath} is not valid: {exception.Message}", exception);
        }
    }

    /// <summary>
    /// runner-curve.json: <c>{"runnerSecretKey": Z85, "runnerPublicKey"?: Z85, "agentPublicKey"?: Z85}</c>.
    /// Absent: null. A file that is there but unusable is an error: silently falling back to the
    /// NULL mechanism would open the session to anyone who reaches its ports.
    /// </summary>
    private static string? LoadCurveSecretKey(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }
        try
        {
            using JsonDocument document = JsonDocument.Parse(File.ReadAllText(path));
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"{path}: the top level must be a JSON object");
            }
            string secret = OptionalString(root, "runnerSecretKey")
                ?? throw new InvalidDataException($"{path}: runnerSecretKey is missing");
            NetMQ.NetMQCertificate certificate;
            try
            {
                certificate = NetMQ.NetMQCertificate.CreateFromSecretKey(secret);
            }
            catch (ArgumentException exception)
            {
                throw new InvalidDataException($"{path}: runnerSecretKey is not a Z85 CURVE key: {exception.Message}", exception);
            }
            if (OptionalString(root, "runnerPublicKey") is string expected && expected != certificate.PublicKeyZ85)
            {
                throw new InvalidDataException($"{path}: runnerPublicKey does not belong to runnerSecretKey");
            }
            return secret;
        }
        catch (Exception exception) when (exception is JsonException or InvalidOperationException)
        {
            throw new InvalidDataException($"{path} is not valid: {exception.Message}", exception);
        }
    }

    /// <summary>KEY=VALUE per line; blank lines, lines starting with '#' and lines without '=' are skipped.</summary>
    public static IEnumerable<(string Key, string Value)> ParseEnviron(string text)
    {
        foreach (string rawLine in text.Split('\n'))
        {
            string line = rawLine.TrimEnd('\r');
            int separator = line.IndexOf('=', StringComparison.Ordinal);
            if (line.Length == 0 || line.StartsWith('#') || separator <= 0)
            {
                continue;
            }
            yield return (line[..separator], line[(separator + 1)..]);
        }
    }

    private static string? OptionalString(JsonElement root, string name) =>
        root.TryGetProperty(name, out JsonElement value) && value.ValueKind != JsonValueKind.Null ? value.GetString() : null;

    private static int? OptionalInt(JsonElement root, string name) =>
        root.TryGetProperty(name, out JsonElement value) && value.ValueKind != JsonValueKind.Null ? value.GetInt32() : null;
}
