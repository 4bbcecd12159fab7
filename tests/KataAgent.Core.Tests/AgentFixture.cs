using KataAgent.Testing;

namespace KataAgent.Core.Tests;

/// <summary>
/// A whole agent with its own private containerd, data dir, CNI network (own bridge and subnet 10.201.X.0/24,
/// no masquerading) and port range, with the python base image imported (a <see cref="TestAgentHost"/>). Torn down
/// with its sessions.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "xunit disposes the host through IAsyncLifetime.DisposeAsync")]
public class AgentFixture : IAsyncLifetime
{
    // Indexes 192-255 with 40 ports each (27680-30239): above the API (20000-24999) and CLI (25000-27499) fixtures' ports.
    private static readonly TestNetworkPlan Plan = new("kat", SubnetOctet: 201, PortBase: 20000, PortsPerIndex: 40, FirstIndex: 192, IndexCount: 64);

    private readonly TestAgentHost _host = new("kaa", Plan);

    public string DataDir => _host.DataDir;
    public Agent Agent => _host.Agent;
    public string ImageName => _host.ImageName;
    public AgentOptions Options => _host.Options;

    /// <summary>This fixture's network index (bridge kat<c>Index</c>, subnet 10.201.<c>Index</c>.0/24).</summary>
    public int Index => _host.Network.Index;

    /// <summary>Stops the agent (sessions and containerd state stay) and starts a new one on the same data dir.</summary>
    public Task RestartAgentAsync() => _host.RestartAgentAsync();

    /// <summary>Restarts the agent with changed options, kept for later restarts.</summary>
    public Task RestartAgentAsync(Func<AgentOptions, AgentOptions> change) => _host.RestartAgentAsync(change);

    /// <summary>A fixture's own settings on top of the common ones.</summary>
    protected virtual AgentOptions Configure(AgentOptions options) => options;

    public Task InitializeAsync() => _host.StartAsync(Configure(_host.CommonOptions("test-agent", "kata-agent-test") with
    {
        ReconcileInterval = TimeSpan.Zero, // tests drive reconciliation themselves
        // Tests run several small sessions at once on a 2-core machine.
        Resources = new ResourceOptions { TotalCpus = 64, DefaultCpus = 0.5, DefaultMemoryBytes = 512L << 20 },
    }));

    public Task DisposeAsync() => _host.DisposeAsync().AsTask();
}
