using System.Text;
using System.Text.Json;

namespace KataAgent.Runner.Protocol;

/// <summary>
/// One kernel-runner protocol message: two frames, an ASCII type and a payload; in sequenced mode (our runner with
/// runner.json <c>sequencedOutput</c>) run output has a third frame <c>{"seq":N,"run":R}</c>.
/// </summary>
public readonly record struct RunnerMessage(string Type, byte[] Payload)
{
    /// <summary>The runner's sequence number of this run output message (sequenced mode only).</summary>
    public long? Seq { get; init; }

    /// <summary>The runner's number of the run (protocol step) that produced it (sequenced mode only).</summary>
    public long? RunNumber { get; init; }

    /// <summary>Longest type accepted; real types are short words like "build-finished".</summary>
    public const int MaxTypeLength = 64;

    public string PayloadText => Encoding.UTF8.GetString(Payload);

    /// <summary>
    /// Parses received frames. Anything but two frames, or a type that is empty, too long or not
    /// printable ASCII, is garbage: the protocol says to ignore it, not to fail.
    /// </summary>
    public static bool TryParse(IReadOnlyList<byte[]> frames, out RunnerMessage message)
    {
        message = default;
        (long Seq, long Run)? header = null;
        if (frames.Count == 3)
        {
            header = ReadSequenceHeader(frames[2]);
            if (header is null)
            {
                return false;
            }
        }
        else if (frames.Count != 2)
        {
            return false;
        }
        byte[] type = frames[0];
        if (type.Length == 0 || type.Length > MaxTypeLength)
        {
            return false;
        }
        foreach (byte character in type)
        {
            if (character is < 0x21 or > 0x7e)
            {
                return false;
            }
        }
        message = new RunnerMessage(Encoding.ASCII.GetString(type), frames[1]) { Seq = header?.Seq, RunNumber = header?.Run };
        return true;
    }

    private static (long Seq, long Run)? ReadSequenceHeader(byte[] frame)
    {
        if (frame.Length is 0 or > 256)
        {
            return null;
        }
        try
        {
            using JsonDocument document = JsonDocument.Parse(frame);
            JsonElement root = document.RootElement;
            return root.ValueKind == JsonValueKind.Object
                && root.TryGetProperty("seq", out JsonElement seq) && seq.TryGetInt64(out long seqValue) && seqValue > 0
                && root.TryGetProperty("run", out JsonElement run) && run.TryGetInt64(out long runValue)
                ? (seqValue, runValue) : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    public static RunnerMessage Create(string type, string payload) => new(type, Encoding.UTF8.GetBytes(payload));
}

/// <summary>Message types of the protocol (runner-protocol.md).</summary>
public static class RunnerMessageTypes
{
    // agent -> runner
    public const string Code = "code";
    public const string Clean = "clean";
    public const string Build = "build";
    public const string Exec = "exec";
    public const string Input = "input";
    public const string Interrupt = "interrupt";
    public const string Complete = "complete";
    public const string Status = "status";
    public const string StartService = "start-service";
    public const string ShutdownService = "shutdown-service";
    public const string GetApps = "get-apps";
    public const string Event = "event";
    /// <summary>Pool members only: the claiming tenant's environment, applied before its first run (kata-runner README).</summary>
    public const string Personalise = "personalise";

    // sequenced mode (our runner, runner.json sequencedOutput): see src/KataAgent.Runner/README.md
    public const string RunLabel = "run-label";
    public const string Replay = "replay";
    public const string Runs = "runs";
    public const string RunsResult = "runs-result";
    public const string ReplayGap = "replay-gap";

    // runner -> agent
    public const string Stdout = "stdout";
    public const string Stderr = "stderr";
    public const string Media = "media";
    public const string Html = "html";
    public const string Log = "log";
    public const string WaitingInput = "waiting-input";
    public const string Finished = "finished";
    public const string BuildFinished = "build-finished";
    public const string CleanFinished = "clean-finished";
    public const string Completion = "completion";
    public const string Personalised = "personalised";
    public const string ServiceResult = "service-result";
    public const string AppsResult = "apps-result";

    // Our extension: commands (src/KataAgent.Runner/README.md, "Commands").
    public const string CommandStart = "cmd-start";
    public const string CommandStdin = "cmd-stdin";
    public const string CommandStdinClose = "cmd-stdin-close";
    public const string CommandResize = "cmd-resize";
    public const string CommandSignal = "cmd-signal";
    public const string CommandList = "cmd-list";
    public const string CommandStarted = "cmd-started";
    public const string CommandOutput = "cmd-output";
    public const string CommandExit = "cmd-exit";
    public const string CommandListResult = "cmd-list-result";
}
