using System.Text.Json;
using System.Text.Json.Serialization;
using KataAgent.Runner.Protocol;

namespace KataAgent.Core.Sessions;

public enum SessionState
{
    Creating,
    Running,
    /// <summary>Running, but frozen by a pause (cgroup freezer on runc/gVisor, the task pause on Kata) until resumed.</summary>
    Paused,
    Exited,
    Destroying,
    Destroyed,
}

public sealed record PublishedPort(string Name, string Protocol, int ContainerPort, string HostIp, int HostPort);

/// <summary>
/// Everything needed to find and rebuild a session after an agent restart. Persisted in the
/// agent's state dir and carried on the container as a label.
/// </summary>
public sealed record SessionRecord
{
    public required string KernelId { get; init; }
    public required string SessionId { get; init; }
    public required string ContainerId { get; init; }
    public required string Image { get; init; }
    public required string RuntimeClass { get; init; }
    public required double Cpus { get; init; }
    public required long MemoryBytes { get; init; }
    public required long ShmBytes { get; init; }
    public string CpuSet { get; init; } = "";
    public IReadOnlyList<PublishedPort> Ports { get; init; } = [];
    public string NetnsPath { get; init; } = "";
    public string ScratchDir { get; init; } = "";
    public string LogPath { get; init; } = "";
    /// <summary>The declared service ports with what the runner's get-apps added (url template, allowed arguments/envs).</summary>
    public IReadOnlyList<SessionServicePort> ServicePorts { get; init; } = [];
    /// <summary>The image's <c>ai.backend.features</c> at create time; null: the image declares none.</summary>
    public IReadOnlyList<string>? Features { get; init; }
    /// <summary>
    /// The image's own kernel runner this session runs (argv) instead of the agent's; null: the agent's runner.
    /// Such a runner is driven without CURVE (<see cref="RunnerCurve"/> is null). A restart and recovery use it again.
    /// </summary>
    public IReadOnlyList<string>? RunnerCommand { get; init; }
    public string StopSignal { get; init; } = "SIGTERM";
    /// <summary>The request as resolved at create time; a restart builds the new container from it.</summary>
    public SessionRequest? Request { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    /// <summary>
    /// The runner channel's CURVE keys (the runner's public key, the agent's key pair). Secret: kept
    /// only in the 0600 record file, never in the container label (<see cref="WithoutSecrets"/>).
    /// </summary>
    public RunnerCurveKeys? RunnerCurve { get; init; }

    public int ReplInPort => Ports.Single(p => p.Name == "replin").HostPort;
    public int ReplOutPort => Ports.Single(p => p.Name == "replout").HostPort;

    /// <summary>The record as it may be shown outside the state dir (container label).</summary>
    public SessionRecord WithoutSecrets() => this with { RunnerCurve = null };

    public string ToJson() => JsonSerializer.Serialize(this, SessionJson.Options);
    public static SessionRecord FromJson(string json) =>
        JsonSerializer.Deserialize<SessionRecord>(json, SessionJson.Options) ?? throw new JsonException("empty session record");
}

internal static class SessionJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };
}
