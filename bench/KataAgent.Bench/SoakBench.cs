using System.Globalization;
using System.Text;
using KataAgent.Testing;

namespace KataAgent.Bench;

/// <summary>N create/exec/upload/download/destroy cycles, alternating runc and gVisor, then the leak census.</summary>
internal static class SoakBench
{
    public static async Task<bool> RunAsync(int cycles, StringBuilder report)
    {
        var dataDir = Path.Combine("/tmp", "kas-" + Guid.NewGuid().ToString("N")[..8]);
        var (agent, image) = await BenchAgent.StartAsync(dataDir, slot: 1);
        try
        {
            var progress = new Progress<int>(n =>
            {
                if (n % 50 == 0)
                    Console.Error.WriteLine($"soak: {n}/{cycles}");
            });
            var result = await Soak.RunAsync(agent, image, ["runc", "gvisor"], cycles, progress);
            report.AppendLine(CultureInfo.InvariantCulture, $"Soak: {result.Cycles} cycles (runc and gVisor alternating) in {result.Elapsed.TotalSeconds:0} s, {result.Failures} failed.");
            foreach (var error in result.Errors.Take(10))
                report.AppendLine(CultureInfo.InvariantCulture, $"- {error}");
            AppendCensus(report, result.Census);
            return result.Failures == 0 && result.Census.IsClean;
        }
        finally
        {
            await agent.DisposeAsync();
            BenchAgent.RemoveDataDir(dataDir);
        }
    }

    public static void AppendCensus(StringBuilder report, AgentLeakCensus census)
    {
        report.AppendLine("\n| leak census | count |");
        report.AppendLine("|---|---|");
        foreach (var (name, count) in census.Counts)
            report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | {count} |");
        if (!census.IsClean)
            report.AppendLine(CultureInfo.InvariantCulture, $"\nLeft behind: {census}");
    }
}
