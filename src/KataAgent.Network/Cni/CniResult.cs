using System.Net;
using System.Text.Json.Nodes;

namespace KataAgent.Network;

public sealed record CniInterface(string Name, string? Mac, string? Sandbox);

/// <summary>An address from a result: <see cref="Address"/> in CIDR form, <see cref="Interface"/> an index into the interfaces.</summary>
public sealed record CniIpConfig(string Address, string? Gateway, int? Interface)
{
    public IPAddress Ip => IPAddress.Parse(Address.Split('/')[0]);
    public int PrefixLength => int.Parse(Address.Split('/')[1]);
}

public sealed record CniRoute(string Destination, string? Gateway);

/// <summary>A parsed CNI 1.0 result. <see cref="Json"/> is the plugin's output as is (what DEL and CHECK get back as prevResult).</summary>
public sealed class CniResult
{
    private CniResult(JsonObject json, string cniVersion, IReadOnlyList<CniInterface> interfaces, IReadOnlyList<CniIpConfig> ips, IReadOnlyList<CniRoute> routes)
    {
        Json = json;
        CniVersion = cniVersion;
        Interfaces = interfaces;
        Ips = ips;
        Routes = routes;
    }

    public JsonObject Json { get; }
    public string CniVersion { get; }
    public IReadOnlyList<CniInterface> Interfaces { get; }
    public IReadOnlyList<CniIpConfig> Ips { get; }
    public IReadOnlyList<CniRoute> Routes { get; }

    public static CniResult Parse(JsonObject json)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            var interfaces = (json["interfaces"] as JsonArray ?? [])
                .OfType<JsonObject>()
                .Select(i => new CniInterface((string?)i["name"] ?? "", (string?)i["mac"], (string?)i["sandbox"]))
                .ToList();
            var ips = (json["ips"] as JsonArray ?? [])
                .OfType<JsonObject>()
                .Select(i => new CniIpConfig(
                    (string?)i["address"] ?? throw new FormatException("ips[] entry without address"),
                    (string?)i["gateway"],
                    (int?)i["interface"]))
                .ToList();
            foreach (var ip in ips)
            {
                if (!LooksLikeHostCidr(ip.Address))
                    throw new FormatException($"invalid address '{ip.Address}'");
            }
            var routes = (json["routes"] as JsonArray ?? [])
                .OfType<JsonObject>()
                .Select(r => new CniRoute((string?)r["dst"] ?? "", (string?)r["gw"]))
                .ToList();
            return new CniResult(json, (string?)json["cniVersion"] ?? "", interfaces, ips, routes);
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        {
            throw new CniException($"malformed CNI result: {e.Message}: {json.ToJsonString()}", e);
        }
    }

    /// <summary>The addresses assigned to the named interface inside the sandbox.</summary>
    public IReadOnlyList<CniIpConfig> IpsOf(string interfaceName, string sandbox) =>
        Ips.Where(ip => ip.Interface is int i && i >= 0 && i < Interfaces.Count
                        && Interfaces[i].Name == interfaceName && Interfaces[i].Sandbox == sandbox)
           .ToList();

    // A result's address is host address + prefix ("10.0.0.2/24"), not a network; check both parts.
    private static bool LooksLikeHostCidr(string cidr)
    {
        string[] parts = cidr.Split('/');
        return parts.Length == 2 && IPAddress.TryParse(parts[0], out var address)
               && int.TryParse(parts[1], out int prefix) && prefix >= 0
               && prefix <= (address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? 128 : 32);
    }
}
