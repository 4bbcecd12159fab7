using System.Text.Json.Nodes;

namespace KataAgent.Network.Tests;

/// <summary>
/// One test class's own CNI network: its bridge, subnet, network name, netns prefix, port range and
/// temporary state/IPAM directories. Names are fixed per class so that a crashed earlier run's leftovers are
/// found and removed at start; at the end every session is detached and the bridge deleted.
/// </summary>
public abstract class TestNetworkFixture : IAsyncLifetime
{
    protected TestNetworkFixture(string tag, string subnet, int firstPort, int lastPort)
    {
        Tag = tag;
        BridgeName = "ktn-" + tag;
        NetworkName = "ka-test-" + tag;
        Subnet = subnet;
        NetnsPrefix = $"ktn-{tag}-";
        Root = Path.Combine(Path.GetTempPath(), $"ka-nettest-{tag}-{Guid.NewGuid():N}"[..40]);
        StateDirectory = Path.Combine(Root, "state");
        IpamDirectory = Path.Combine(Root, "ipam");
        FakePluginDirectory = Path.Combine(Root, "plugins");
        Ports = new HostPortPool(firstPort, lastPort);
    }

    public string Tag { get; }
    public string BridgeName { get; }
    public string NetworkName { get; }
    public string Subnet { get; }
    public string NetnsPrefix { get; }
    public string Root { get; }
    public string StateDirectory { get; }
    public string IpamDirectory { get; }
    public string FakePluginDirectory { get; }
    public HostPortPool Ports { get; }

    /// <summary>The files host-local keeps per allocated address (named after the address).</summary>
    public IReadOnlyList<string> AllocatedIps() =>
        Directory.Exists(Path.Combine(IpamDirectory, NetworkName))
            ? Directory.EnumerateFiles(Path.Combine(IpamDirectory, NetworkName)).Select(Path.GetFileName).OfType<string>()
                .Where(n => System.Net.IPAddress.TryParse(n, out _)).ToList()
            : [];

    public CniNetworkSettings Settings(params JsonObject[] extraPlugins) => new()
    {
        NetworkName = NetworkName,
        BridgeName = BridgeName,
        Subnet = Subnet,
        IpMasq = false, // tests reach nothing outside the host
        IpamDataDirectory = IpamDirectory,
        ExtraPlugins = extraPlugins,
    };

    public SessionNetworkOptions Options(CniNetworkSettings? settings = null, TimeSpan? pluginTimeout = null, string? fakePluginDirectory = null) => new()
    {
        Network = settings ?? Settings(),
        PluginDirectories = [fakePluginDirectory ?? FakePluginDirectory, "/usr/lib/cni"],
        PluginTimeout = pluginTimeout ?? TimeSpan.FromSeconds(120),
        StateDirectory = StateDirectory,
        NetnsPrefix = NetnsPrefix,
    };

    public SessionNetwork CreateNetwork(CniNetworkSettings? settings = null, TimeSpan? pluginTimeout = null, string? fakePluginDirectory = null) =>
        new(Options(settings, pluginTimeout, fakePluginDirectory));

    /// <summary>A fresh directory for one test's fake plugins (and their logs).</summary>
    public string NewPluginDirectory() => Path.Combine(Root, "plugins-" + Guid.NewGuid().ToString("N")[..8]);

    public static string NewSessionId() => "s" + Guid.NewGuid().ToString("N")[..12];

    public async Task InitializeAsync()
    {
        if (!Environment.IsPrivilegedProcess)
            return;
        await RemoveLeftoversAsync();
        Directory.CreateDirectory(FakePluginDirectory);
    }

    public async Task DisposeAsync()
    {
        if (!Environment.IsPrivilegedProcess)
            return;
        try
        {
            // Detach whatever a failed test left, with the config recorded at its ADD.
            var network = CreateNetwork();
            foreach (var record in await network.ListAsync())
            {
                try
                {
                    await network.DetachAsync(record.SessionId);
                }
                catch (Exception)
                {
                    // A test's fake plugin may be gone; the netns and state go below, the temporary IPAM with Root.
                }
            }
        }
        finally
        {
            await RemoveLeftoversAsync();
            if (Directory.Exists(Root))
                Directory.Delete(Root, recursive: true);
        }
    }

    private async Task RemoveLeftoversAsync()
    {
        var namespaces = new NetworkNamespaces();
        foreach (string name in namespaces.List().Where(n => n.StartsWith(NetnsPrefix, StringComparison.Ordinal)))
            namespaces.Delete(name);
        if (Directory.Exists(StateDirectory))
            Directory.Delete(StateDirectory, recursive: true);
        await Host.DeleteLinkIfPresentAsync(BridgeName);
    }
}
