using KataAgent.Core.Sessions;

namespace KataAgent.Core.Tests;

public sealed class ServicePortLabelTests
{
    [Fact]
    public void Parses_single_and_list_ports_and_skips_pty()
    {
        var ports = ServicePortLabel.Parse("jupyter:http:8081,ttyd:pty:7682, vscode:http:[8180,8181]");
        Assert.Equal(2, ports.Count);
        Assert.Equal(new ServicePortDefinition("jupyter", "http", [8081]).Name, ports[0].Name);
        Assert.Equal([8081], ports[0].ContainerPorts);
        Assert.Equal("vscode", ports[1].Name);
        Assert.Equal([8180, 8181], ports[1].ContainerPorts);
    }

    [Theory]
    [InlineData("a:http:2000", "reserved")]
    [InlineData("a:http:80", "> 1024")]
    [InlineData("a:ftp:8080", "unknown protocol")]
    [InlineData("a:http:8080,b:tcp:8080", "used twice")]
    [InlineData("a:http:x", "not a number")]
    [InlineData("a:http", "name:protocol:port")]
    [InlineData("a:http:8080,a:tcp:8081", "appears twice")]
    public void Rejects_bad_labels_naming_the_problem(string label, string expected)
    {
        var e = Assert.Throws<FormatException>(() => ServicePortLabel.Parse(label));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Empty_label_means_no_services() => Assert.Empty(ServicePortLabel.Parse(null));
}
