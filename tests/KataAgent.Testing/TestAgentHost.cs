using KataAgent.Core;
using KataAgent.Core.Cgroups;
using KataAgent.Images;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Testing;

/// <summary>
/// A whole agent for tests: its own data dir under /tmp, its own private containerd (the agent starts it in the data
/// dir), its own network (<see cref="TestNetwork"/>: bridge, subnet without masquerading, port range, netns prefix), its
/// own cgroup parent, and the python base image imported. Disposal destroys its sessions and removes everything it made.
/// </summary>
/// <remarks>
/// The common settings live in <see cref="CommonOptions(string, string, string, TestNetwork)"/>; a fixture adds its own with
/// <c>with { ... }</c> before <see cref="StartAsync"/>. Fixtures whose agent runs in another process (the CLI tests) use
/// <see cref="CommonOptions(string, string, string, TestNetwork)"/> and <see cref="TestNetwork"/> alone.
/// </remarks>
public sealed class TestAgentHost : IAsyncDisposable
{
    private Agent? _agent;

    /// <param name="dataDirPrefix">Names the data dir (<c>/tmp/PREFIX-RANDOM</c>), so a leftover says which tests made it.</param>
    /// <param name="plan">Where the agent's network comes from.</param>
    public TestAgentHost(string dataDirPrefix, TestNetworkPlan plan)
    {
        DataDir = Path.Combine("/tmp", dataDirPrefix + "-" + Guid.NewGuid().ToString("N")[..8]);
        Network = TestNetwork.Take(plan);
    }

    public string DataDir { get; }

    public TestNetwork Network { get; }

    public AgentOptions Options { get; private set; } = new();

    public Agent Agent => _agent ?? throw new InvalidOperationException("the test agent is not started");

    public string ImageName { get; private set; } = "";

    /// <summary>Settings every test agent shares; <paramref name="network"/> supplies bridge, subnet, netns prefix and ports.</summary>
    public static AgentOptions CommonOptions(string agentId, string dataDir, string containerdNamespace, TestNetwork network)
    {
        ArgumentNullException.ThrowIfNull(network);
        return new AgentOptions
        {
            AgentId = agentId,
            DataDir = dataDir,
            Namespace = containerdNamespace,
            DefaultRuntimeClass = "runc",
            // runc is opt-in (runtime.allowed_classes); the tests run on it and on gVisor.
            AllowedRuntimeClasses = ["kata", "gvisor", "runc"],
            // A cgroup parent of its own that no earlier run made: every agent starts from a fresh host's state.
            CgroupParent = "/" + Path.GetFileName(dataDir),
            RunnerDir = RunnerLocation.Directory(),
            // Below the kernel's ephemeral range (32768+): a published port there can capture (DNAT) some other loopback
            // connection that happened to get the same ephemeral port, e.g. NetMQ's internal signaler pair.
            PortRangeStart = network.PortRangeStart,
            PortRangeEnd = network.PortRangeEnd,
            NetworkName = network.Name,
            BridgeName = network.Name,
            Subnet = network.Subnet,
            IpMasquerade = false,
            NetnsPrefix = network.NetnsPrefix,
            RunnerReadyTimeout = TimeSpan.FromSeconds(90),
            StopGracePeriod = TimeSpan.FromSeconds(5),
        };
    }

    /// <summary>The common settings for this host's data dir and network.</summary>
    public AgentOptions CommonOptions(string agentId, string containerdNamespace) => CommonOptions(agentId, DataDir, containerdNamespace, Network);

    /// <summary>Starts the agent with <paramref name="options"/> (see <see cref="CommonOptions(string, string)"/>) and imports the python base image.</summary>
    public async Task StartAsync(AgentOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.DataDir != DataDir || options.BridgeName != Network.Name)
            throw new ArgumentException("options must be built on this host's data dir and network (CommonOptions(agentId, namespace))", nameof(options));
        Options = options;
        _agent = await Agent.StartAsync(options, NullLoggerFactory.Instance);
        var built = await new BaseImageBuilder().BuildPythonAsync();
        ImageName = (await new ImageImporter(_agent.Containerd).ImportAsync(built.ArchivePath)).Single().Name;
    }

    /// <summary>Stops the agent (sessions and containerd state stay) and starts a new one on the same data dir.</summary>
    public async Task RestartAgentAsync()
    {
        await Agent.DisposeAsync();
        _agent = null;
        _agent = await Agent.StartAsync(Options, NullLoggerFactory.Instance);
    }

    /// <summary>Restarts the agent with changed options (same data dir and network), kept for later restarts.</summary>
    public async Task RestartAgentAsync(Func<AgentOptions, AgentOptions> change)
    {
        ArgumentNullException.ThrowIfNull(change);
        Options = change(Options);
        await RestartAgentAsync();
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (_agent is not null)
            {
                // First: a refiller running on would make new members while the namespace is reaped below.
                await _agent.DrainPoolsAsync();
                foreach (var session in _agent.Sessions)
                {
                    try
                    {
                        await _agent.DestroySessionAsync(session.KernelId);
                    }
                    catch (Exception)
                    {
                        // keep tearing down
                    }
                }
                await Reaper.ReapNamespaceAsync(_agent.Containerd, CancellationToken.None);
                await _agent.DisposeAsync();
                _agent = null;
            }
            if (!string.IsNullOrEmpty(Options.CgroupParent))
                SessionCgroupParent.ForHost(Options.CgroupParent).RemoveIfEmpty();
            await Network.DeleteLinkAsync();
            Mounts.UnmountAllUnder(DataDir);
            try
            {
                Directory.Delete(DataDir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
        finally
        {
            Network.Dispose();
        }
    }
}
