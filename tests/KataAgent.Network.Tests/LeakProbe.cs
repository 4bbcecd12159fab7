using System.Text.RegularExpressions;

namespace KataAgent.Network.Tests;

/// <summary>
/// What one attachment put on the host, captured while attached, so that after detach (or a failed attach)
/// the test can show each piece is gone: netns, host veth, bridge port, iptables chains and rules, IPAM file.
/// </summary>
internal sealed record LeakProbe(string SessionId, string NetnsName, string? Ip, string? HostVeth, IReadOnlyList<string> Chains)
{
    /// <summary>Chains whose rules name this container (portmap's CNI-DN-*, bridge's ipMasq CNI-*), from iptables-save.</summary>
    public static IReadOnlyList<string> ChainsOf(string iptablesSave, string sessionId)
    {
        var chains = new HashSet<string>(StringComparer.Ordinal);
        foreach (string line in iptablesSave.Split('\n').Where(l => l.Contains($"id: \\\"{sessionId}\\\"", StringComparison.Ordinal)))
        {
            var jump = Regex.Match(line, @"-j (CNI-[A-Za-z0-9-]+)");
            if (jump.Success)
                chains.Add(jump.Groups[1].Value);
        }
        return chains.Where(c => !c.StartsWith("CNI-HOSTPORT-", StringComparison.Ordinal)).Order().ToList();
    }

    public static async Task<LeakProbe> CaptureAsync(NetworkAttachment attachment)
    {
        string save = await Host.IptablesSaveAsync();
        return new LeakProbe(attachment.SessionId, attachment.NetnsName, attachment.Ip?.ToString(), attachment.HostInterface, ChainsOf(save, attachment.SessionId));
    }

    public async Task AssertGoneAsync(TestNetworkFixture fixture)
    {
        Assert.False(File.Exists(Path.Combine(NetworkNamespaces.DefaultRunDirectory, NetnsName)), $"netns {NetnsName} left");
        Assert.False(File.Exists(Path.Combine(fixture.StateDirectory, SessionId + ".json")), "state file left");
        if (HostVeth is not null)
            Assert.False(Host.LinkExists(HostVeth), $"veth {HostVeth} left");
        if (HostVeth is not null)
            Assert.DoesNotContain(HostVeth, Host.BridgePorts(fixture.BridgeName));
        string save = await Host.IptablesSaveAsync();
        foreach (string chain in Chains)
            Assert.DoesNotContain($":{chain} ", save, StringComparison.Ordinal);
        Assert.DoesNotContain($"\\\"{SessionId}\\\"", save, StringComparison.Ordinal);
        if (Ip is not null)
        {
            Assert.DoesNotContain($" {Ip}/32 ", save + " ", StringComparison.Ordinal);
            Assert.DoesNotContain($"{Ip}:", save, StringComparison.Ordinal);
            Assert.DoesNotContain(Ip, fixture.AllocatedIps());
        }
    }
}
