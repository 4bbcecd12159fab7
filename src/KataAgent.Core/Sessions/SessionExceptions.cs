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
