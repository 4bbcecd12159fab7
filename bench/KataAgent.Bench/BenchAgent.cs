using KataAgent.Core;
using KataAgent.Images;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Bench;

/// <summary>An agent for benchmarks: own data dir, private containerd, own CNI bridge/subnet (no masquerading), base image imported.</summary>
internal static class BenchAgent
{
    public static AgentOptions Options(string dataDir) => new()
    {
        AgentId = "bench",
        DataDir = dataDir,
        Namespace = "kata-agent-bench",
        DefaultRuntimeClass = "runc",
        RunnerDir = RunnerDir(),
        PortRangeStart = 34000,
        PortRangeEnd = 34999,
        NetworkName = "kabench",
        BridgeName = "kabench0",
        Subnet = "10.203.0.0/22",
        IpMasquerade = false,
        NetnsPrefix = "kab-",
        ReconcileInterval = TimeSpan.Zero,
        StopGracePeriod = TimeSpan.FromSeconds(2),
        Resources = new ResourceOptions { TotalCpus = 256, DefaultCpus = 0.25, DefaultMemoryBytes = 256L << 20, ReservedMemoryBytes = 0 },
    };

    public static async Task<(Agent Agent, string Image)> StartAsync(string dataDir)
    {
        var agent = await Agent.StartAsync(Options(dataDir), NullLoggerFactory.Instance);
        var built = await new BaseImageBuilder().BuildPythonAsync();
        var image = (await new ImageImporter(agent.Containerd).ImportAsync(built.ArchivePath)).Single();
        return (agent, image.Name);
    }

    public static string RunnerDir()
    {
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
            Directory.Delete(dataDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
