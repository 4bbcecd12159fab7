using System.Net;

namespace KataAgent.Network;

/// <summary>A session's network as wired by CNI ADD.</summary>
public sealed record NetworkAttachment(
    string SessionId,
    string NetnsName,
    string NetnsPath,
    string InterfaceName,
    IReadOnlyList<CniIpConfig> Addresses,
    string? HostInterface,
    IReadOnlyList<PortMapping> PortMappings,
    CniResult Result)
{
    /// <summary>The session's first address (what published ports are forwarded to).</summary>
    public IPAddress? Ip => Addresses.Count > 0 ? Addresses[0].Ip : null;
}

public enum SessionNetworkStatus
{
    /// <summary>ADD completed.</summary>
    Attached,
    /// <summary>ADD started but never completed (the agent died mid-ADD); detach it.</summary>
    Incomplete,
    /// <summary>A namespace with the agent's prefix but no state file; detach it.</summary>
    NamespaceOnly,
}

/// <summary>What the agent finds on the host after a restart, per session id.</summary>
public sealed record SessionNetworkRecord(string SessionId, SessionNetworkStatus Status, IReadOnlyList<PortMapping> PortMappings, NetworkAttachment? Attachment);

/// <summary>A session network operation failed; the message names the session and what is left behind, if anything.</summary>
public sealed class SessionNetworkException : Exception
{
    public SessionNetworkException(string sessionId, string message, Exception? inner = null) : base(message, inner) => SessionId = sessionId;

    public string SessionId { get; }
}
