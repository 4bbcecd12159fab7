using System.Text;

namespace KataAgent.Runner.Protocol;

/// <summary>One kernel-runner protocol message: exactly two frames, an ASCII type and a payload.</summary>
public readonly record struct RunnerMessage(string Type, byte[] Payload)
{
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
        if (frames.Count != 2)
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
        message = new RunnerMessage(Encoding.ASCII.GetString(type), frames[1]);
        return true;
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
}
