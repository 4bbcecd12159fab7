using System.Net;
using System.Text.Json.Nodes;

namespace KataAgent.Network;

/// <summary>One published port: host <see cref="HostIp"/>:<see cref="HostPort"/> → session <see cref="ContainerPort"/>.</summary>
public sealed record PortMapping(string HostIp, int HostPort, int ContainerPort, string Protocol = "tcp")
{
    public void Validate()
    {
        if (HostPort is < 1 or > 65535)
            throw new ArgumentException($"host port {HostPort} out of range 1-65535");
        if (ContainerPort is < 1 or > 65535)
            throw new ArgumentException($"container port {ContainerPort} out of range 1-65535");
        if (Protocol is not ("tcp" or "udp" or "sctp"))
            throw new ArgumentException($"protocol '{Protocol}' for host port {HostPort}: expected tcp, udp or sctp");
        if (!string.IsNullOrEmpty(HostIp) && !IPAddress.TryParse(HostIp, out _))
            throw new ArgumentException($"host IP '{HostIp}' for host port {HostPort} is not an IP address");
    }

    /// <summary>The portMappings capability entry portmap expects.</summary>
    internal JsonObject ToCniJson()
    {
        var json = new JsonObject { ["hostPort"] = HostPort, ["containerPort"] = ContainerPort, ["protocol"] = Protocol };
        if (!string.IsNullOrEmpty(HostIp))
            json["hostIP"] = HostIp;
        return json;
    }

    internal static PortMapping FromCniJson(JsonObject json) => new(
        (string?)json["hostIP"] ?? "",
        (int?)json["hostPort"] ?? throw new CniException("portMappings entry without hostPort"),
        (int?)json["containerPort"] ?? throw new CniException("portMappings entry without containerPort"),
        (string?)json["protocol"] ?? "tcp");
}
