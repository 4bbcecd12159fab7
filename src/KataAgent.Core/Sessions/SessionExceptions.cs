namespace KataAgent.Core.Sessions;

/// <summary>The request itself is wrong; nothing was created.</summary>
public sealed class SessionRequestException(string message) : Exception(message);

public sealed class SessionNotFoundException(string kernelId) : Exception($"no session '{kernelId}'")
{
    public string KernelId { get; } = kernelId;
}

/// <summary>A create step failed; every earlier step was undone.</summary>
public sealed class SessionCreateException(string kernelId, string step, Exception inner)
    : Exception($"creating session {kernelId} failed at step '{step}': {inner.Message}", inner)
{
    public string KernelId { get; } = kernelId;
    public string Step { get; } = step;
}

/// <summary>A run that was waiting when its session ended: names how it ended.</summary>
public sealed class SessionEndedDuringRunException(string kernelId, string runId, SessionEndReason reason)
    : Exception($"session {kernelId} ended during run {runId}: {reason.Describe()}")
{
    public string KernelId { get; } = kernelId;
    public string RunId { get; } = runId;
    public SessionEndReason Reason { get; } = reason;
}
