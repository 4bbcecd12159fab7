namespace KataAgent.Network;

public sealed record SessionNetworkOptions
{
    public CniNetworkSettings Network { get; init; } = new();
    public IReadOnlyList<string> PluginDirectories { get; init; } = CniPluginInvoker.DefaultPluginDirectories;
    /// <summary>Limit for one plugin execution (the whole ADD runs several).</summary>
    public TimeSpan PluginTimeout { get; init; } = CniPluginInvoker.DefaultTimeout;
    /// <summary>One JSON file per attachment: the exact config list and runtime config of the ADD, and its result.</summary>
    public string StateDirectory { get; init; } = "/var/lib/kata-agent/network";
    public string NetnsDirectory { get; init; } = NetworkNamespaces.DefaultRunDirectory;
    /// <summary>Namespace name = prefix + session id; the prefix marks the agent's namespaces among others'.</summary>
    public string NetnsPrefix { get; init; } = "ka-";
    public string InterfaceName { get; init; } = "eth0";
    /// <summary>
    /// Plugin types left out of CHECK. portmap up to 1.1.x (Debian bookworm ships 1.1.1) fails CHECK on every
    /// IPv4-only attachment, looking for ip6tables rules it never made (containernetworking/plugins#819).
    /// </summary>
    public IReadOnlyList<string> CheckSkipsPlugins { get; init; } = ["portmap"];
    /// <summary>
    /// After DEL, remove iptables rules still commented with this network and session (bridge's ipMasq chain, which
    /// bridge 1.1.x leaves when the session's interface vanished before DEL; a portmap chain a failed DEL left).
    /// </summary>
    public bool RemoveMasqueradeLeftovers { get; init; } = true;
    /// <summary>The walls around sessions (nftables); null only for tests of CNI itself.</summary>
    public Isolation.NetworkGuardOptions? Guard { get; init; }
}
