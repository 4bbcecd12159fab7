using System.Text.Json;
using System.Text.Json.Serialization;

namespace KataAgent.Runner.Protocol;

/// <summary>How <see cref="KernelRunnerClient.ExecuteAsync"/> treats its text.</summary>
public enum ExecutionMode
{
    /// <summary>Run the text as code in the persistent interpreter (`code`).</summary>
    Query,

    /// <summary>Run <see cref="ExecutionOptions.Clean"/>, <see cref="ExecutionOptions.Build"/>, <see cref="ExecutionOptions.Exec"/> as shell commands; the text is unused.</summary>
    Batch,

    /// <summary>Answer a `waiting-input` with the text (or feed a batch command's stdin), then collect.</summary>
    Input,

    /// <summary>Only collect more output of the active run.</summary>
    Continue,
}

/// <summary>The status of an <see cref="ExecutionResult"/> as the protocol names it.</summary>
public static class ExecutionStatus
{
    public const string Finished = "finished";
    public const string BuildFinished = "build-finished";
    public const string CleanFinished = "clean-finished";
    public const string WaitingInput = "waiting-input";

    /// <summary>The flush timeout passed before the run reached an end (with or without output); call again with <see cref="ExecutionMode.Continue"/>.</summary>
    public const string Continued = "continued";

    /// <summary>The run exceeded <see cref="ExecutionOptions.ExecTimeout"/>; it was interrupted and is over.</summary>
    public const string ExecTimeout = "exec-timeout";
}

/// <summary>
/// One console entry, serialized as <c>[kind, data]</c>; a media item (kind "media") as
/// <c>["media", [mime, data]]</c>, as Backend.AI's agent does. <see cref="Mime"/> is null for every other kind.
/// </summary>
[JsonConverter(typeof(ConsoleItemJsonConverter))]
public sealed record ConsoleItem(string Kind, string Data, string? Mime = null)
{
    /// <summary>A media item: <paramref name="data"/> is what the runner sent (png/jpeg as a data URI, svg and html as text).</summary>
    public static ConsoleItem Media(string mime, string data) => new(RunnerMessageTypes.Media, data, mime);
}

/// <summary>What one execute call returns.</summary>
public sealed record ExecutionResult
{
    [JsonPropertyName("runId")]
    public required string RunId { get; init; }

    [JsonPropertyName("status")]
    public required string Status { get; init; }

    /// <summary>Always written, null when unset (as Backend.AI's agent does).</summary>
    [JsonPropertyName("exitCode")]
    public int? ExitCode { get; init; }

    /// <summary>Consecutive stdout (stderr) chunks are merged into one entry.</summary>
    [JsonPropertyName("console")]
    public required IReadOnlyList<ConsoleItem> Console { get; init; }

    /// <summary>The JSON payload of `waiting-input` (e.g. is_password) when <see cref="Status"/> is waiting-input.</summary>
    [JsonPropertyName("options")]
    public JsonElement? Options { get; init; }

    /// <summary>Characters of output dropped because nobody collected them (see <see cref="KernelRunnerClientOptions.MaxBufferedCharacters"/>).</summary>
    [JsonPropertyName("droppedCharacters")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long DroppedCharacters { get; init; }

    /// <summary>True when the run is over (the next queued run starts).</summary>
    [JsonIgnore]
    public bool RunEnded => Status is ExecutionStatus.Finished or ExecutionStatus.ExecTimeout;

    public string ToJson() => JsonSerializer.Serialize(this);
}

/// <summary>Per-call settings of an execute call.</summary>
public sealed record ExecutionOptions
{
    /// <summary>
    /// <see cref="KernelRunnerClient.ExecuteAsync"/> returns `continued` after this long (counted from the
    /// start of collecting) when the run has not reached an end, with whatever output there is, maybe none.
    /// <see cref="Timeout.InfiniteTimeSpan"/>: wait for the end.
    /// </summary>
    public TimeSpan FlushTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// The same for <see cref="KernelRunnerClient.ExecuteStreamingAsync"/>: after this long the stream ends with a
    /// `continued` result. Null (the default): stream to the next end message.
    /// </summary>
    public TimeSpan? StreamingFlushTimeout { get; init; }

    /// <summary>Limit on the whole run, counted from its start; taken from the call that starts the run. Null: none.</summary>
    public TimeSpan? ExecTimeout { get; init; }

    /// <summary>Batch mode steps: shell commands; "" skips a step, "*" asks the runner to guess.</summary>
    public string Clean { get; init; } = "";

    public string Build { get; init; } = "";

    public string Exec { get; init; } = "";
}

/// <summary>An element of <see cref="KernelRunnerClient.ExecuteStreamingAsync"/>.</summary>
public abstract record ExecutionEvent;

/// <summary>Output as it arrived (already UTF-8 decoded; not merged across events).</summary>
public sealed record OutputEvent(ConsoleItem Item) : ExecutionEvent;

/// <summary>The last event of a streaming call: the status as <see cref="KernelRunnerClient.ExecuteAsync"/> would report it, with an empty console.</summary>
public sealed record ResultEvent(ExecutionResult Result) : ExecutionEvent;

/// <summary>Two collectors of one run, or starting a run under the id of a run that is active or queued.</summary>
public sealed class RunInProgressException(string message) : InvalidOperationException(message);

/// <summary>A run could not be queued: <see cref="KernelRunnerClientOptions.MaxQueuedRuns"/> runs already wait for their turn.</summary>
public sealed class RunQueueFullException(string message) : InvalidOperationException(message);

/// <summary>`input`/`continue` for a run that is not the active one.</summary>
public sealed class NoActiveRunException(string message) : InvalidOperationException(message);

/// <summary>The runner cannot be reached or lost its connection while a request was pending.</summary>
public sealed class RunnerUnavailableException(string message) : IOException(message);

internal sealed class ConsoleItemJsonConverter : JsonConverter<ConsoleItem>
{
    public override ConsoleItem Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new JsonException("a console item is a [kind, data] array");
        }
        reader.Read();
        string kind = reader.GetString() ?? "";
        reader.Read();
        ConsoleItem item;
        if (reader.TokenType == JsonTokenType.StartArray && kind == RunnerMessageTypes.Media)
        {
            reader.Read();
            string mime = reader.GetString() ?? "";
            reader.Read();
            item = ConsoleItem.Media(mime, ReadText(ref reader));
            reader.Read();
            if (reader.TokenType != JsonTokenType.EndArray)
            {
                throw new JsonException("a media item's data is a [mime, data] array");
            }
        }
        else
        {
            item = new ConsoleItem(kind, ReadText(ref reader));
        }
        reader.Read();
        if (reader.TokenType != JsonTokenType.EndArray)
        {
            throw new JsonException("a console item has exactly two elements");
        }
        return item;
    }

    public override void Write(Utf8JsonWriter writer, ConsoleItem value, JsonSerializerOptions options)
    {
        writer.WriteStartArray();
        writer.WriteStringValue(value.Kind);
        if (value.Mime is { } mime)
        {
            writer.WriteStartArray();
            writer.WriteStringValue(mime);
            writer.WriteStringValue(value.Data);
            writer.WriteEndArray();
        }
        else
        {
            writer.WriteStringValue(value.Data);
        }
        writer.WriteEndArray();
    }

    private static string ReadText(ref Utf8JsonReader reader) =>
        reader.TokenType == JsonTokenType.String ? reader.GetString() ?? "" : JsonDocument.ParseValue(ref reader).RootElement.GetRawText();
}
