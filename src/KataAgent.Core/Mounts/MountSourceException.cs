namespace KataAgent.Core.Mounts;

/// <summary>A requested host mount source was refused; the message names the path and why.</summary>
public sealed class MountSourceException(string hostPath, string reason)
    : Exception($"mount source '{hostPath}' {reason}")
{
    public string HostPath { get; } = hostPath;
    public string Reason { get; } = reason;
}
