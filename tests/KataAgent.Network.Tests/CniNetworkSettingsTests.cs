using System.Text.Json.Nodes;

namespace KataAgent.Network.Tests;

public sealed class CniNetworkSettingsTests
{
    [Fact]
    public void Production_defaults()
    {
        var settings = new CniNetworkSettings();
        Assert.Equal("kata-agent", settings.NetworkName);
        Assert.Equal("ka0", settings.BridgeName);
        Assert.Equal("10.88.64.0/20", settings.Subnet);
        Assert.True(settings.IpMasq);
        var options = new SessionNetworkOptions();
        Assert.Equal(["/usr/lib/cni", "/opt/cni/bin"], options.PluginDirectories);
        Assert.Equal(["portmap"], options.CheckSkipsPlugins);
    }

    [Fact]
    public void The_config_list_chains_bridge_portmap_firewall_and_extras()
    {
        var list = new CniNetworkSettings
        {
            NetworkName = "kt-net",
            BridgeName = "kt0",
            Subnet = "10.231.9.0/24",
            Gateway = "10.231.9.1",
            IpMasq = false,
            Mtu = 1400,
            FirewallBackend = "iptables",
            IpamDataDirectory = "/tmp/ipam",
            ExtraPlugins = [new JsonObject { ["type"] = "tuning" }],
        }.BuildConfigList();

        Assert.Equal("1.0.0", (string?)list["cniVersion"]);
        Assert.Equal("kt-net", (string?)list["name"]);
        var plugins = list["plugins"]!.AsArray();
        Assert.Equal(["bridge", "portmap", "firewall", "tuning"], plugins.Select(p => (string?)p!["type"]));
        var bridge = plugins[0]!;
        Assert.Equal("kt0", (string?)bridge["bridge"]);
        Assert.False((bool)bridge["ipMasq"]!);
        Assert.True((bool)bridge["isGateway"]!);
        Assert.True((bool)bridge["hairpinMode"]!);
        Assert.Equal(1400, (int)bridge["mtu"]!);
        Assert.Equal("host-local", (string?)bridge["ipam"]!["type"]);
        Assert.Equal("10.231.9.0/24", (string?)bridge["ipam"]!["ranges"]![0]![0]!["subnet"]);
        Assert.Equal("10.231.9.1", (string?)bridge["ipam"]!["ranges"]![0]![0]!["gateway"]);
        Assert.Equal("/tmp/ipam", (string?)bridge["ipam"]!["dataDir"]);
        Assert.True((bool)plugins[1]!["capabilities"]!["portMappings"]!);
        Assert.True((bool)plugins[1]!["snat"]!);
        Assert.Equal("iptables", (string?)plugins[2]!["backend"]);

        var minimal = new CniNetworkSettings { PortMap = false, Firewall = false }.BuildConfigList();
        Assert.Equal(["bridge"], minimal["plugins"]!.AsArray().Select(p => (string?)p!["type"]));
        Assert.Null(minimal["plugins"]![0]!["ipam"]!["dataDir"]);
    }

    [Theory]
    [InlineData("bad name", "ka0", "10.88.64.0/20", null, "network name")]
    [InlineData("-x", "ka0", "10.88.64.0/20", null, "network name")]
    [InlineData("ok", "a-bridge-name-too-long", "10.88.64.0/20", null, "bridge name")]
    [InlineData("ok", "a/b", "10.88.64.0/20", null, "bridge name")]
    [InlineData("ok", "ka0", "10.88.64.1/20", null, "subnet")]
    [InlineData("ok", "ka0", "banana", null, "subnet")]
    [InlineData("ok", "ka0", "10.88.64.0/20", "10.99.0.1", "gateway")]
    public void Invalid_settings_name_what_is_wrong(string name, string bridge, string subnet, string? gateway, string expected)
    {
        var settings = new CniNetworkSettings { NetworkName = name, BridgeName = bridge, Subnet = subnet, Gateway = gateway };
        var e = Assert.Throws<CniException>(() => settings.BuildConfigList());
        Assert.Contains(expected, e.Message);
        Assert.Throws<CniException>(() => new SessionNetwork(new SessionNetworkOptions { Network = settings }));
    }

    [Fact]
    public void Results_are_parsed_with_interface_indices()
    {
        var result = CniResult.Parse(JsonNode.Parse("""
            {"cniVersion":"1.0.0",
             "interfaces":[{"name":"ka0","mac":"aa"},{"name":"veth1"},{"name":"eth0","sandbox":"/var/run/netns/x"}],
             "ips":[{"interface":2,"address":"10.88.64.5/20","gateway":"10.88.64.1"},{"address":"fd00::5/64"}],
             "routes":[{"dst":"0.0.0.0/0","gw":"10.88.64.1"}],"dns":{}}
            """)!.AsObject());
        Assert.Equal("1.0.0", result.CniVersion);
        Assert.Equal(3, result.Interfaces.Count);
        var mine = Assert.Single(result.IpsOf("eth0", "/var/run/netns/x"));
        Assert.Equal("10.88.64.5", mine.Ip.ToString());
        Assert.Equal(20, mine.PrefixLength);
        Assert.Equal(64, result.Ips[1].PrefixLength);
        Assert.Empty(result.IpsOf("eth0", "/var/run/netns/other"));
        Assert.Equal("10.88.64.1", result.Routes[0].Gateway);

        Assert.Throws<CniException>(() => CniResult.Parse(JsonNode.Parse("""{"ips":[{"address":"10.0.0.1"}]}""")!.AsObject()));
        Assert.Throws<CniException>(() => CniResult.Parse(JsonNode.Parse("""{"ips":[{"gateway":"10.0.0.1"}]}""")!.AsObject()));
    }

    [Fact]
    public void Port_mappings_are_validated_and_serialised_for_portmap()
    {
        new PortMapping("127.0.0.1", 30001, 2000).Validate();
        new PortMapping("", 30001, 2000, "udp").Validate();
        Assert.Throws<ArgumentException>(() => new PortMapping("127.0.0.1", 70000, 2000).Validate());
        Assert.Throws<ArgumentException>(() => new PortMapping("127.0.0.1", 30001, 0).Validate());
        Assert.Throws<ArgumentException>(() => new PortMapping("127.0.0.1", 30001, 2000, "TCP").Validate());
        var json = new PortMapping("127.0.0.1", 30001, 2000).ToCniJson();
        Assert.Equal("""{"hostPort":30001,"containerPort":2000,"protocol":"tcp","hostIP":"127.0.0.1"}""", json.ToJsonString());
        Assert.Null(new PortMapping("", 30001, 2000).ToCniJson()["hostIP"]);
    }
}
