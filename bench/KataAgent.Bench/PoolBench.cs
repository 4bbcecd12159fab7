using System.Diagnostics;
using System.Globalization;
using System.Text;
using KataAgent.Core;
using KataAgent.Core.Containers;
using KataAgent.Core.Pool;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Bench;

/// <summary>
/// Issue 19's pooled figures: a create that claims a warm-pool member → its runner answers (the claim's personalise
/// round trip included), next to a cold create and a bare container in the same run; and the soak with pools on.
/// </summary>
internal static class PoolBench
{
    private const string Image = "kata-agent/python:3-bookworm";
    private const double Cpus = 0.25;
    private const long Memory = 256L << 20;

    private static AgentOptions WithPools(AgentOptions options, IEnumerable<string> runtimes, int idle) => options with
    {
        Pools = runtimes.Select(r => new PoolSpec { Image = Image, RuntimeClass = r, Cpus = Cpus, MemoryBytes = Memory, Min = 1, Max = idle, TargetIdle = idle })
            .ToList(),
    };

    public static async Task RunAsync(int runs, IReadOnlyList<string> runtimes, StringBuilder report)
    {
        var dataDir = Path.Combine("/tmp", "kab-pool-" + Guid.NewGuid().ToString("N")[..8]);
        var (agent, image) = await BenchAgent.StartAsync(dataDir, slot: 3, o => WithPools(o, runtimes, idle: 2));
        if (image != Image)
            throw new InvalidOperationException($"the base image is {image}, the pools name {Image}");
        try
        {
            report.AppendLine("Each pooled claim starts with the pool full and no member being made (a quiet claim); the cold create of the");
            report.AppendLine("same request follows with the pools drained, then a bare container (create, start, first output) through containerd.");
            report.AppendLine();
            report.AppendLine("| figure | runtime | n | p50 ms | p99 ms | baseline p50 ms | ratio |");
            report.AppendLine("|---|---|---|---|---|---|---|");
            var imageDetails = (await agent.Services.Images.FindAsync(image))!;
            var resolved = new ResolvedImage(image, imageDetails.Config, imageDetails.ChainId);
            var results = new Dictionary<string, (List<double> Claim, List<double> Exec)>(StringComparer.Ordinal);
            foreach (var runtime in runtimes)
            {
                var claim = new List<double>();
                var exec = new List<double>();
                for (var i = 0; i < runs + 1; i++)
                {
                    await Eventually.WaitAsync(() => agent.Pools.Single(p => p.Spec.RuntimeClass == runtime), p => p.Idle == 2 && p.Filling == 0,
                        $"the {runtime} pool to be full", TimeSpan.FromMinutes(5));
                    var sw = Stopwatch.StartNew();
                    var session = await agent.CreateSessionAsync(Request(runtime, i));
                    var claimMs = sw.Elapsed.TotalMilliseconds;
                    if (session.CreatePath != CreatePath.Pooled)
                        throw new InvalidOperationException($"run {i} on {runtime} went {session.CreatePath}");
                    sw.Restart();
                    await foreach (var _ in agent.ExecuteAsync(session.KernelId, "p" + i.ToString(CultureInfo.InvariantCulture), ExecutionMode.Query, "pass"))
                    {
                    }
                    var execMs = sw.Elapsed.TotalMilliseconds;
                    await agent.DestroySessionAsync(session.KernelId);
                    if (i == 0)
                        continue; // warm-up
                    claim.Add(claimMs);
                    exec.Add(execMs);
                }
                results[runtime] = (claim, exec);
            }

            // Cold creates and bare containers with no pool competing for the cores.
            await agent.DrainPoolsAsync();
            foreach (var runtime in runtimes)
            {
                var cold = new List<double>();
                var bare = new List<double>();
                var runtimeClass = agent.RuntimeClasses.Resolve(runtime).Class;
                for (var i = 0; i < runs + 1; i++)
                {
                    var sw = Stopwatch.StartNew();
                    var session = await agent.CreateSessionAsync(Request(runtime, i));
                    var coldMs = sw.Elapsed.TotalMilliseconds;
                    await agent.DestroySessionAsync(session.KernelId);
                    var bareMs = await SessionBench.BareContainerMsAsync(agent, dataDir, resolved, runtimeClass);
                    if (i == 0)
                        continue;
                    cold.Add(coldMs);
                    bare.Add(bareMs);
                }
                var (claim, exec) = results[runtime];
                report.AppendLine(SessionBench.Row("pooled claim → runner answers", runtime, claim, bare));
                report.AppendLine(SessionBench.Row("  first exec of `pass` after the claim", runtime, exec, null));
                report.AppendLine(SessionBench.Row("cold create → runner answers", runtime, cold, bare));
            }
        }
        finally
        {
            await agent.DisposeAsync();
            BenchAgent.RemoveDataDir(dataDir);
        }
    }

    /// <summary>The soak (create, exec, upload, download, destroy) with pools of its shape on, then the census after a drain.</summary>
    public static async Task<bool> SoakAsync(int cycles, StringBuilder report)
    {
        var dataDir = Path.Combine("/tmp", "kas-pool-" + Guid.NewGuid().ToString("N")[..8]);
        string[] runtimes = ["runc", "gvisor"];
        // Soak's requests are 0.5 cpu / 256 MiB: the pools take that shape.
        var (agent, image) = await BenchAgent.StartAsync(dataDir, slot: 1, o => o with
        {
            Pools = runtimes.Select(r => new PoolSpec { Image = Image, RuntimeClass = r, Cpus = 0.5, MemoryBytes = Memory, Min = 1, Max = 2, TargetIdle = 2 }).ToList(),
        });
        try
        {
            var progress = new Progress<int>(n =>
            {
                if (n % 50 == 0)
                    Console.Error.WriteLine($"soak with pools: {n}/{cycles}");
            });
            var result = await Soak.RunAsync(agent, image, runtimes, cycles, progress);
            var pools = agent.Pools;
            await agent.DrainPoolsAsync();
            var census = await AgentLeakCensus.TakeAsync(agent);
            report.AppendLine(CultureInfo.InvariantCulture, $"Soak with warm pools: {result.Cycles} cycles (runc and gVisor alternating) in {result.Elapsed.TotalSeconds:0} s, {result.Failures} failed.");
            foreach (var pool in pools)
            {
                report.AppendLine(CultureInfo.InvariantCulture,
                    $"- pool {pool.Key}: {pool.Claims} claims, {pool.Misses} misses (cold), {pool.Refills} members made (mean {pool.MeanRefill?.TotalMilliseconds:0} ms), {pool.RefillFailures} failed, {pool.Discarded} discarded");
            }
            foreach (var error in result.Errors.Take(10))
                report.AppendLine(CultureInfo.InvariantCulture, $"- {error}");
            report.AppendLine("\nCensus taken after the soak's last destroy and a drain of the pools (every idle member reaped):");
            SoakBench.AppendCensus(report, census);
            return result.Failures == 0 && census.IsClean;
        }
        finally
        {
            await agent.DisposeAsync();
            BenchAgent.RemoveDataDir(dataDir);
        }
    }

    private static SessionRequest Request(string runtime, int i) => new()
    {
        Image = Image,
        RuntimeClass = runtime,
        Cpus = Cpus,
        MemoryBytes = Memory,
        Environment = new Dictionary<string, string> { ["BENCH_RUN"] = i.ToString(CultureInfo.InvariantCulture) },
    };
}
