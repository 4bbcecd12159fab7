namespace KataAgent.Network.Tests;

/// <summary>Which lines of an iptables-save dump the leftover remover deletes (the real iptables run is in SessionNetworkTests).</summary>
public sealed class CniRuleLeftoversTests
{
    private const string Dump = """
        *nat
        :PREROUTING ACCEPT [0:0]
        :POSTROUTING ACCEPT [0:0]
        :CNI-DN-aaaaaaaaaaaaaaaaaaaaa - [0:0]
        :CNI-DN-bbbbbbbbbbbbbbbbbbbbb - [0:0]
        :CNI-DN-ccccccccccccccccccccc - [0:0]
        :CNI-0123456789abcdef01234567 - [0:0]
        :CNI-HOSTPORT-DNAT - [0:0]
        -A CNI-DN-aaaaaaaaaaaaaaaaaaaaa -d 127.0.0.1/32 -p tcp -m tcp --dport 20001 -j DNAT --to-destination 10.201.1.5:2000
        -A CNI-DN-bbbbbbbbbbbbbbbbbbbbb -d 127.0.0.1/32 -p tcp -m tcp --dport 20002 -j DNAT --to-destination 10.201.1.6:2000
        -A CNI-DN-ccccccccccccccccccccc -d 127.0.0.1/32 -p tcp -m tcp --dport 20003 -j DNAT --to-destination 10.202.1.6:2000
        -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"net1\" id: \"live\"" -m multiport --dports 20001 -j CNI-DN-aaaaaaaaaaaaaaaaaaaaa
        -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"net1\" id: \"gone\"" -m multiport --dports 20002 -j CNI-DN-bbbbbbbbbbbbbbbbbbbbb
        -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"net2\" id: \"gone\"" -m multiport --dports 20003 -j CNI-DN-ccccccccccccccccccccc
        -A POSTROUTING -s 10.201.1.6/32 -m comment --comment "name: \"net1\" id: \"gone\"" -j CNI-0123456789abcdef01234567
        -A CNI-0123456789abcdef01234567 -d 10.201.1.0/24 -m comment --comment "name: \"net1\" id: \"gone\"" -j ACCEPT
        COMMIT
        """;

    [Fact]
    public void Removes_the_portmap_and_bridge_rules_of_the_selected_ids_of_this_network_only()
    {
        string? script = CniRuleLeftovers.BuildRemovalScript("nat", Dump, "net1", id => id != "live", out int count);

        Assert.NotNull(script);
        var lines = script!.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(
        [
            "*nat",
            "-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"net1\\\" id: \\\"gone\\\"\" -m multiport --dports 20002 -j CNI-DN-bbbbbbbbbbbbbbbbbbbbb",
            "-D POSTROUTING -s 10.201.1.6/32 -m comment --comment \"name: \\\"net1\\\" id: \\\"gone\\\"\" -j CNI-0123456789abcdef01234567",
            "-F CNI-0123456789abcdef01234567",
            "-F CNI-DN-bbbbbbbbbbbbbbbbbbbbb",
            "-X CNI-0123456789abcdef01234567",
            "-X CNI-DN-bbbbbbbbbbbbbbbbbbbbb",
            "COMMIT",
        ], lines);
        Assert.Equal(4, count);
    }

    [Fact]
    public void Nothing_selected_means_no_script()
    {
        Assert.Null(CniRuleLeftovers.BuildRemovalScript("nat", Dump, "net1", _ => false, out int count));
        Assert.Equal(0, count);
        Assert.Null(CniRuleLeftovers.BuildRemovalScript("nat", Dump, "net3", _ => true, out _));
    }

    [Fact]
    public void A_name_that_only_starts_like_this_network_is_not_this_network()
    {
        Assert.Null(CniRuleLeftovers.BuildRemovalScript("nat", Dump, "net", _ => true, out _));
    }
}
