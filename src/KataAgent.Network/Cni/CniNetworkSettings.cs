using System.Net;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace KataAgent.Network;

/// <summary>
/// The agent's session network, from which the CNI config list is generated:
/// bridge (+ host-local IPAM) → portmap → firewall → any extra plugins.
/// </summary>
public sealed partial record CniNetworkSettings
{
    public string CniVersion { get; init; } = "1.0.0";
    public string NetworkName { get; init; } = "kata-agent";
    public string BridgeName { get; init; } = "ka0";
    public string Subnet { get; init; } = "10.88.64.0/20";
    /// <summary>Bridge address; null lets host-local take the subnet's first address.</summary>
    public string? Gateway { get; init; }
    /// <summary>Masquerade traffic leaving the subnet. Tests must keep this false (they reach nothing outside).</summary>
    public bool IpMasq { get; init; } = true;
    public bool IsGateway { get; init; } = true;
    /// <summary>Lets a session reach its own published ports through the host.</summary>
    public bool HairpinMode { get; init; } = true;
    public int? Mtu { get; init; }
    public bool PortMap { get; init; } = true;
    /// <summary>SNAT for published ports; needed for host 127.0.0.1 → session (portmap also sets route_localnet).</summary>
    public bool PortMapSnat { get; init; } = true;
    public bool Firewall { get; init; } = true;
    /// <summary>"iptables" or "firewalld"; null lets the plugin pick (firewalld if it answers on D-Bus).</summary>
    public string? FirewallBackend { get; init; }
    /// <summary>Where host-local keeps its allocations; null means its default, /var/lib/cni/networks.</summary>
    public string? IpamDataDirectory { get; init; }
    /// <summary>Plugin objects appended to the chain as given (e.g. bandwidth, tuning, or a test's fake plugin).</summary>
    public IReadOnlyList<JsonObject> ExtraPlugins { get; init; } = [];

    public JsonObject BuildConfigList()
    {
        Validate();
        var ipam = new JsonObject
        {
            ["type"] = "host-local",
            ["ranges"] = new JsonArray(new JsonArray(Gateway is null
                ? new JsonObject { ["subnet"] = Subnet }
                : new JsonObject { ["subnet"] = Subnet, ["gateway"] = Gateway })),
            ["routes"] = new JsonArray(new JsonObject { ["dst"] = "0.0.0.0/0" }),
        };
        if (IpamDataDirectory is not null)
            ipam["dataDir"] = IpamDataDirectory;

        var bridge = new JsonObject
        {
            ["type"] = "bridge",
            ["bridge"] = BridgeName,
            ["isGateway"] = IsGateway,
            ["ipMasq"] = IpMasq,
            ["hairpinMode"] = HairpinMode,
            ["ipam"] = ipam,
        };
        if (Mtu is int mtu)
            bridge["mtu"] = mtu;

        var plugins = new JsonArray(bridge);
        if (PortMap)
        {
            plugins.Add(new JsonObject
            {
                ["type"] = "portmap",
                ["capabilities"] = new JsonObject { ["portMappings"] = true },
                ["snat"] = PortMapSnat,
            });
        }
        if (Firewall)
        {
            var firewall = new JsonObject { ["type"] = "firewall" };
            if (FirewallBackend is not null)
                firewall["backend"] = FirewallBackend;
            plugins.Add(firewall);
        }
        foreach (var extra in ExtraPlugins)
            plugins.Add(extra.DeepClone());

        return new JsonObject
        {
            ["cniVersion"] = CniVersion,
            ["name"] = NetworkName,
            ["plugins"] = plugins,
        };
    }

    public void Validate()
    {
        // The same rule libcni applies to network names (they become directory names for host-local).
        if (!NamePattern().IsMatch(NetworkName))
            throw new CniException($"invalid CNI network name '{NetworkName}': letters, digits, '_', '.', '-', starting with a letter or digit");
        // IFNAMSIZ is 16 including the terminating NUL.
        if (BridgeName.Length is 0 or > 15 || BridgeName.Any(c => c is '/' or ':' || char.IsWhiteSpace(c)) || BridgeName is "." or "..")
            throw new CniException($"invalid bridge name '{BridgeName}': 1-15 characters, no '/', ':' or spaces");
        // IPNetwork.TryParse accepts host bits ("10.88.64.1/20"); a subnet written that way is most likely a typo.
        if (!IPNetwork.TryParse(Subnet, out var subnet) || !subnet.BaseAddress.Equals(IPAddress.Parse(Subnet.Split('/')[0])))
            throw new CniException($"invalid subnet '{Subnet}': expected a CIDR with no host bits set, e.g. 10.88.64.0/20");
        if (Gateway is not null && (!IPAddress.TryParse(Gateway, out var gateway) || !subnet.Contains(gateway)))
            throw new CniException($"gateway '{Gateway}' is not an address inside subnet {Subnet}");
        if (Mtu is < 68 or > 65535)
            throw new CniException($"invalid MTU {Mtu}");
        if (FirewallBackend is not (null or "iptables" or "firewalld"))
            throw new CniException($"invalid firewall backend '{FirewallBackend}': iptables or firewalld");
    }

    [GeneratedRegex("^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")]
    private static partial Regex NamePattern();
}
