using System.Globalization;
using KataAgent.Core;
using KataAgent.Images;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Core.Tests;

/// <summary>
/// A whole agent with its own private containerd, data dir, CNI network (own bridge and subnet,
/// no masquerading) and port range, with the python base image imported. Torn down with its sessions.
/// </summary>
public class AgentFixture : IAsyncLifetime
{
    private static int _instances;

    public string DataDir { get; } = Path.Combine("/tmp", "kaa-" + Guid.NewGuid().ToString("N")[..8]);
    public Agent Agent { get; private set; } = null!;
    public string ImageName { get; private set; } = "";
    public AgentOptions Options { get; private set; } = new();

    /// <summary>Stops the agent (sessions and containerd state stay) and starts a new one on the same data dir.</summary>
    public async Task RestartAgentAsync()
    {
        await Agent.DisposeAsync();
        Agent = await Agent.StartAsync(Options, NullLoggerFactory.Instance);
    }
    // Distinct per fixture within a test run (bridge, subnet, ports, netns prefix): fixtures of one
    // process must never share a network, or one agent's start-up cleanup would take another's sessions.
    // Host-wide, not only per process: test runs of other checkouts on this host run side by side, and two fixtures with
    // one index (pid % 8 alike) took each other's guard set elements, so sessions answered nobody. An flock per index
    // (held for the fixture's life) makes the index exclusive; 192-255 stays clear of fixtures that pick by pid.
    private readonly (int Index, FileStream Lock) _network = TakeIndex();

    public int Index => _network.Index;

    private static (int Index, FileStream Lock) TakeIndex()
    {
        const string lockDir = "/tmp/kata-agent-test-index";
        Directory.CreateDirectory(lockDir);
        var start = Interlocked.Increment(ref _instances);
        for (var i = 0; i < 64; i++)
        {
            var index = 192 + (start + i) % 64;
            try
            {
                // FileShare.None is an flock(LOCK_EX | LOCK_NB) on Linux: taken by another fixture, here or elsewhere, it throws.
                return (index, new FileStream(Path.Combine(lockDir, index.ToString(CultureInfo.InvariantCulture)), FileMode.OpenOrCreate,
                    FileAccess.ReadWrite, FileShare.None));
            }
            catch (IOException)
            {
            }
        }
        throw new InvalidOperationException("all 64 test network indexes (192-255) are held by other fixtures");
    }

    /// <summary>A fixture's own settings on top of the common ones.</summary>
    protected virtual AgentOptions Configure(AgentOptions options) => options;

    public async Task InitializeAsync()
    {
        Options = new AgentOptions
        {
            AgentId = "test-agent",
            DataDir = DataDir,
            Namespace = "kata-agent-test",
            DefaultRuntimeClass = "runc",
            // runc is opt-in (runtime.allowed_classes); the tests run on it and on gVisor.
            AllowedRuntimeClasses = ["kata", "gvisor", "runc"],
            // A cgroup parent of its own that no earlier run made: every fixture starts from a fresh host's state.
            CgroupParent = "/" + Path.GetFileName(DataDir),
            RunnerDir = RunnerLocation.Directory(),
            // Below the kernel's ephemeral range (32768+): a published port there could capture a local
            // connection (NetMQ connects to itself on a random 127.0.0.1 port) into the container.
            PortRangeStart = 20000 + Index * 40,
            PortRangeEnd = 20000 + Index * 40 + 39,
            NetworkName = "kat" + Index.ToString(CultureInfo.InvariantCulture),
            BridgeName = "kat" + Index.ToString(CultureInfo.InvariantCulture),
            Subnet = $"10.201.{Index}.0/24",
            IpMasquerade = false,
            NetnsPrefix = "kat" + Index.ToString(CultureInfo.InvariantCulture) + "-",
            RunnerReadyTimeout = TimeSpan.FromSeconds(90),
            StopGracePeriod = TimeSpan.FromSeconds(5),
            ReconcileInterval = TimeSpan.Zero, // tests drive reconciliation themselves
            // Tests run several small sessions at once on a 2-core machine.
            Resources = new ResourceOptions { TotalCpus = 64, DefaultCpus = 0.5, DefaultMemoryBytes = 512L << 20 },
        };
        Options = Configure(Options);
        Agent = await Agent.StartAsync(Options, NullLoggerFactory.Instance);
        var built = await new BaseImageBuilder().BuildPythonAsync();
        var imported = await new ImageImporter(Agent.Containerd).ImportAsync(built.ArchivePath);
        ImageName = imported.Single().Name;
    }

    public async Task DisposeAsync()
    {
        foreach (var session in Agent.Sessions)
        {
            try
            {
                await Agent.DestroySessionAsync(session.KernelId);
            }
            catch (Exception)
            {
                // keep tearing down
            }
        }
        await Reaper.ReapNamespaceAsync(Agent.Containerd, CancellationToken.None);
        var cgroups = Agent.Services.Cgroups;
        await Agent.DisposeAsync();
        cgroups.RemoveIfEmpty();
        await HostNetwork.DeleteLinkAsync("kat" + Index.ToString(CultureInfo.InvariantCulture));
        KataAgent.Testing.Mounts.UnmountAllUnder(DataDir);
        try
        {
            Directory.Delete(DataDir, recursive: true);
        }
        catch (IOException)
        {
        }
        await _network.Lock.DisposeAsync();
    }
}
