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
    public const string IntrinsicPortsFile = "intrinsic-ports.json";
    public const string DefaultUserInputSocket = "/tmp/bai-user-input.sock";

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

    /// <summary>
    /// runner.json "pooled": true: a warm-pool member. It starts up but holds the bootstrap script and the
    /// interpreter until the agent personalises it (the `personalise` message) for the one tenant it will serve.
    /// </summary>
    public bool Pooled { get; init; }

    /// <summary>Backend.AI service definitions, one &lt;name&gt;.json per service app.</summary>
    public string ServiceDefsDir { get; init; } = "/etc/backend.ai/service-defs";

    /// <summary>From runner-curve.json: the runner's CURVE secret key (Z85); null means the NULL mechanism.</summary>
    public string? CurveSecretKey { get; init; }

    /// <summary>Unix socket that batch-mode Python's input() connects to (Backend.AI's path; overridable for host tests).</summary>
    public string UserInputSocket { get; init; } = DefaultUserInputSocket;

    /// <summary>runner.json <c>sequencedOutput</c>: run output carries a sequence header and is kept for `replay` (our agent opts in).</summary>
    public bool SequencedOutput { get; init; }

    /// <summary>runner.json <c>replayBufferBytes</c>: payload bytes of sent run output kept for `replay` (default 16 MiB, at least 64 KiB).</summary>
    public long ReplayBufferBytes { get; init; } = DefaultReplayBufferBytes;

    public const long DefaultReplayBufferBytes = 16L * 1024 * 1024;
    public const long MinReplayBufferBytes = 64L * 1024;

    /// <summary>
    /// Environment for every process the runner starts (see <see cref="BuildChildEnvironment"/>). Replaced, never
    /// mutated, once start-up knows the Python user site dir: readers may hold an older snapshot.
    /// </summary>
    public required IReadOnlyDictionary<string, string> ChildEnvironment { get; set; }

    public bool HasInterpreter => RuntimeType == "python";

    public static RunnerConfig Load(string configDir)
    {
        if (!Directory.Exists(configDir))
        {
            throw new InvalidDataException($"config dir {configDir} does not exist");
        }
        var processEnvironment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            string key = (string)entry.Key;
            if (key != ConfigDirEnvironmentVariable)
            {
                processEnvironment[key] = (string?)entry.Value ?? "";
            }
        }
        string environPath = Path.Combine(configDir, "environ.txt");
        IReadOnlyList<(string Key, string Value)> environ = File.Exists(environPath) ? [.. ParseEnviron(File.ReadAllText(environPath))] : [];
        (int? intrinsicIn, int? intrinsicOut) = LoadIntrinsicPorts(Path.Combine(configDir, IntrinsicPortsFile));

        string settingsPath = Path.Combine(configDir, "runner.json");
        // Read here, before the uid switch: the file is root's alone (0600).
        string? curveSecretKey = LoadCurveSecretKey(Path.Combine(configDir, CurveKeyFile));
        var defaults = new RunnerConfig { ConfigDir = configDir, ChildEnvironment = processEnvironment };
        JsonDocument? document = null;
        try
        {
            if (File.Exists(settingsPath))
            {
                document = JsonDocument.Parse(File.ReadAllText(settingsPath));
                if (document.RootElement.ValueKind != JsonValueKind.Object)
                {
                    throw new InvalidDataException("the top level must be a JSON object");
                }
            }
            JsonElement root = document?.RootElement ?? default;
            string? Text(string name) => document is null ? null : OptionalString(root, name);
            int? Number(string name) => document is null ? null : OptionalInt(root, name);

            string workDir = Text("workDir") ?? defaults.WorkDir;
            string? bootstrap = Text("bootstrap");
            return new RunnerConfig
            {
                ConfigDir = configDir,
                ChildEnvironment = BuildChildEnvironment(processEnvironment, environ, workDir, path => File.Exists(path) || Directory.Exists(path)),
                RuntimeType = Text("runtimeType") ?? defaults.RuntimeType,
                RuntimePath = Text("runtimePath") ?? defaults.RuntimePath,
                WorkDir = workDir,
                BindHost = Text("bindHost") ?? defaults.BindHost,
                // Explicit runner.json ports win; else intrinsic-ports.json (Backend.AI's host-network convention); else 2000/2001.
                InboundPort = Number("replInPort") ?? intrinsicIn ?? defaults.InboundPort,
                OutboundPort = Number("replOutPort") ?? intrinsicOut ?? defaults.OutboundPort,
                Uid = Number("uid"),
                Gid = Number("gid"),
                // Backend.AI's user bootstrap is /home/work/bootstrap.sh; runner.json may name another (relative = in the config dir).
                BootstrapScript = bootstrap is null ? Path.Combine(workDir, "bootstrap.sh")
                    : Path.IsPathRooted(bootstrap) ? bootstrap : Path.Combine(configDir, bootstrap),
                BootstrapTimeout = TimeSpan.FromSeconds(Number("bootstrapTimeoutSeconds") ?? 600),
                UserInputSocket = Text("userInputSocket") ?? defaults.UserInputSocket,
                ServiceDefsDir = Text("serviceDefsDir") ?? defaults.ServiceDefsDir,
                CurveSecretKey = curveSecretKey,
                SequencedOutput = document is not null && OptionalBool(root, "sequencedOutput") == true,
                ReplayBufferBytes = document is not null && OptionalLong(root, "replayBufferBytes") is long bytes
                    ? bytes >= MinReplayBufferBytes ? bytes
                        : throw new InvalidDataException($"{settingsPath}: replayBufferBytes {bytes} is below the minimum of {MinReplayBufferBytes}")
                    : DefaultReplayBufferBytes,
                Pooled = document is not null && root.TryGetProperty("pooled", out JsonElement pooled) && pooled.ValueKind == JsonValueKind.True,
            };
        }
        catch (Exception exception) when (exception is JsonException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{settingsPath} is not valid: {exception.Message}", exception);
        }
        finally
        {
            document?.Dispose();
        }
    }

    /// <summary>
    /// Backend.AI's child environment: the runner's own, with LANG, HOME and TERM forced; PATH and SHELL
    /// defaulted when missing; then environ.txt, which overrides anything; then ~/.local/bin (and the
    /// CUDA, NVIDIA and Linuxbrew bin dirs when present) moved to the front of PATH.
    /// </summary>
    public static Dictionary<string, string> BuildChildEnvironment(IReadOnlyDictionary<string, string> processEnvironment,
        IEnumerable<(string Key, string Value)> environ, string workDir, Func<string, bool> exists)
    {
        var environment = new Dictionary<string, string>(processEnvironment, StringComparer.Ordinal)
        {
            ["LANG"] = "C.UTF-8",
            ["HOME"] = workDir,
            ["TERM"] = "xterm",
        };
        _ = environment.TryAdd("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        _ = environment.TryAdd("SHELL", exists("/bin/ash") ? "/bin/ash" : exists("/bin/bash") ? "/bin/bash" : "/bin/sh");
        foreach ((string key, string value) in environ)
        {
            environment[key] = value;
        }
        string path = environment["PATH"];
        foreach (string directory in new[] { "/usr/local/cuda/bin", "/usr/local/nvidia/bin", "/home/linuxbrew/.linuxbrew/bin" })
        {
            if (exists(directory))
            {
                path = PromotePath(path, directory);
            }
        }
        environment["PATH"] = PromotePath(path, Path.Combine(workDir, ".local", "bin"));
        return environment;
    }

    /// <summary>Puts <paramref name="entry"/> first in a colon-separated list, removing other copies of it.</summary>
    public static string PromotePath(string list, string entry) =>
        string.Join(':', new[] { entry }.Concat(list.Split(':').Where(item => item.Length > 0 && item != entry)));

    /// <summary>Adds the Python user site dir (found once at start-up) to the front of PYTHONPATH for every later child.</summary>
    public void PromotePythonUserSite(string userSite)
    {
        var environment = new Dictionary<string, string>(ChildEnvironment, StringComparer.Ordinal);
        environment["PYTHONPATH"] = PromotePath(environment.GetValueOrDefault("PYTHONPATH", ""), userSite);
        ChildEnvironment = environment;
    }

    /// <summary>A claimed pool member's environment: applied over everything else, as environ.txt would have been.</summary>
    public void ApplyTenantEnvironment(IEnumerable<(string Key, string Value)> environ)
    {
        var environment = new Dictionary<string, string>(ChildEnvironment, StringComparer.Ordinal);
        foreach ((string key, string value) in environ)
        {
            environment[key] = value;
        }
        ChildEnvironment = environment;
    }

    /// <summary>intrinsic-ports.json: <c>{"replin": 2000, "replout": 2001, ...}</c> (numbers or numeric strings); absent: nulls.</summary>
    private static (int? In, int? Out) LoadIntrinsicPorts(string path)
    {
        if (!File.Exists(path))
        {
            return (null, null);
        }
        try
        {
            using JsonDocument document = JsonDocument.Parse(File.ReadAllText(path));
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"{path}: the top level must be a JSON object");
            }
            int? Port(string name)
            {
                if (!document.RootElement.TryGetProperty(name, out JsonElement value) || value.ValueKind == JsonValueKind.Null)
                {
                    return null;
                }
                int port = value.ValueKind == JsonValueKind.String ? int.Parse(value.GetString()!, System.Globalization.CultureInfo.InvariantCulture) : value.GetInt32();
                return port is > 0 and < 65536 ? port : throw new InvalidDataException($"{path}: {name} {port} is not a TCP port");
            }
            return (Port("replin"), Port("replout"));
        }
        catch (Exception exception) when (exception is JsonException or InvalidOperationException or FormatException or OverflowException)
        {
            throw new InvalidDataException($"{path} is not valid: {exception.Message}", exception);
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

    private static bool? OptionalBool(JsonElement root, string name) =>
        root.TryGetProperty(name, out JsonElement value) && value.ValueKind != JsonValueKind.Null ? value.GetBoolean() : null;

    private static long? OptionalLong(JsonElement root, string name) =>
        root.TryGetProperty(name, out JsonElement value) && value.ValueKind != JsonValueKind.Null ? value.GetInt64() : null;

    private static int? OptionalInt(JsonElement root, string name) =>
        root.TryGetProperty(name, out JsonElement value) && value.ValueKind != JsonValueKind.Null ? value.GetInt32() : null;
}
