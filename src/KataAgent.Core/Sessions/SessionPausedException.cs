namespace KataAgent.Core.Sessions;

/// <summary>Code was sent to a paused session: refused at once instead of waiting for a resume that may never come.</summary>
public sealed class SessionPausedException(string kernelId)
    : Exception($"session {kernelId} is paused: resume it first (kata-agent session resume {kernelId}); runs in progress continue after the resume")
{
    public string KernelId { get; } = kernelId;
}
