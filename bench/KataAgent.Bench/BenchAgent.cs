using KataAgent.Core;
using KataAgent.Images;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Bench;

/// <summary>An agent for benchmarks: own data dir, private containerd, own CNI bridge/subnet (no masquerading), base image imported.</summary>
internal static class BenchAgent
{
    /// <summary>Each scenario has its own slot (bridge, subnet, ports, netns prefix) so scenarios can run side by side.</summary>
    public static AgentOptions Options(string dataDir, int slot = 0) => new()
    {
        AgentId = "bench",
        DataDir = dataDir,
        Namespace = "kata-agent-bench",
        DefaultRuntimeClass = "runc",
        AllowedRuntimeClasses = ["kata", "gvisor", "runc"],
        RunnerDir = RunnerDir(),
        // Below the ephemeral range (32768+), away from the tests' 20000-28159.
        PortRangeStart = 29000 + slot * 300,
        PortRangeEnd = 29299 + slot * 300,
        NetworkName = $"kabench{slot}",
        BridgeName = $"kabench{slot}",
        Subnet = $"10.204.{slot * 4}.0/22",
        IpMasquerade = false,
        NetnsPrefix = $"kab{slot}-",
        ReconcileInterval = TimeSpan.Zero,
        StopGracePeriod = TimeSpan.FromSeconds(2),
        Resources = new ResourceOptions
        {
            TotalCpus = 256, DefaultCpus = 0.25, DefaultMemoryBytes = 256L << 20, ReservedMemoryBytes = 0,
            // KATA_BENCH_SCRATCH_BYTES=0 measures create without the per-session scratch disk (mkfs + loop mount).
            DefaultScratchBytes = long.TryParse(Environment.GetEnvironmentVariable("KATA_BENCH_SCRATCH_BYTES"), out var scratch) ? scratch : new ResourceOptions().DefaultScratchBytes,
        },
    };

    public static async Task<(Agent Agent, string Image)> StartAsync(string dataDir, int slot = 0, Func<AgentOptions, AgentOptions>? configure = null)
    {
        var options = Options(dataDir, slot);
        var agent = await Agent.StartAsync(configure is null ? options : configure(options), NullLoggerFactory.Instance);
        var built = await new BaseImageBuilder().BuildPythonAsync();
        var image = (await new ImageImporter(agent.Containerd).ImportAsync(built.ArchivePath)).Single();
        return (agent, image.Name);
    }

    public static string RunnerDir()
    {
        if (Environment.GetEnvironmentVariable("KATA_RUNNER_DIR") is { Length: > 0 } chosen)
            return File.Exists(Path.Combine(chosen, "kata-runner")) ? chosen : throw new InvalidOperationException($"KATA_RUNNER_DIR={chosen} holds no kata-runner");
        var dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "KataAgent.slnx")))
            dir = Path.GetDirectoryName(dir);
        var runner = dir is null ? null : Path.Combine(dir, "artifacts", "runner");
        return runner is not null && File.Exists(Path.Combine(runner, "kata-runner"))
            ? runner
            : throw new InvalidOperationException("publish the runner first: scripts/publish-runner.sh");
    }

    public static void RemoveDataDir(string dataDir)
    {
        try
        {
            // The agent leaves its scratch root mounted (nosuid,nodev) for the next start; this data dir has none.
            Core.HostDirectories.ScratchRootMount.Remove(Path.Combine(dataDir, "scratch"));
            Directory.Delete(dataDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
