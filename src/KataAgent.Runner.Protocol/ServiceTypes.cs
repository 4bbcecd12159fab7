using System.Text.Json.Serialization;

namespace KataAgent.Runner.Protocol;

/// <summary>
/// A service app for `start-service`, as KataAgent's runner reads it: the command runs in the session's
/// work dir with the session environment plus <see cref="Environment"/>; "{port}" in the command and in
/// environment values is replaced by the first port. The service counts as started once every port accepts TCP.
/// </summary>
public sealed record ServiceDefinition
{
    [JsonPropertyName("name")]
    public required string Name { get; init; }

    /// <summary>argv; a single-element list whose element contains spaces is not split (use <c>["/bin/sh","-c","..."]</c> for shell text).</summary>
    [JsonPropertyName("command")]
    public required IReadOnlyList<string> Command { get; init; }

    [JsonPropertyName("ports")]
    public required IReadOnlyList<int> Ports { get; init; }

    /// <summary>tcp, http, preopen, vnc or rdp (informational for the runner).</summary>
    [JsonPropertyName("protocol")]
    public string Protocol { get; init; } = "tcp";

    [JsonPropertyName("env")]
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();

    [JsonPropertyName("startTimeoutSeconds")]
    public int StartTimeoutSeconds { get; init; } = 30;
}

/// <summary>The `service-result` answer: started, running (already was) or failed with <see cref="Error"/>.</summary>
public sealed record ServiceResult(
    [property: JsonPropertyName("status")] string Status,
    [property: JsonPropertyName("error")] string? Error)
{
    public bool Succeeded => Status is "started" or "running";
}

/// <summary>A `complete` request: the code, the cursor position and/or the text of the current line before the cursor.</summary>
public sealed record CompletionRequest
{
    [JsonPropertyName("code")]
    public string Code { get; init; } = "";

    [JsonPropertyName("row")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? Row { get; init; }

    [JsonPropertyName("col")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? Column { get; init; }

    [JsonPropertyName("line")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Line { get; init; }

    [JsonPropertyName("post")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Post { get; init; }
}
