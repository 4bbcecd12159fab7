using System.Diagnostics;
using System.Globalization;
using System.Text;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;

namespace KataAgent.Bench;

/// <summary>Exec round trip of `pass` through the agent (execute → runner → finished), per runtime.</summary>
internal static class ExecBench
{
    public static async Task RunAsync(int runs, StringBuilder report)
    {
        var dataDir = Path.Combine("/tmp", "kae-" + Guid.NewGuid().ToString("N")[..8]);
        var (agent, image) = await BenchAgent.StartAsync(dataDir);
        try
        {
            report.AppendLine("| exec of `pass` | runs | p50 ms | p99 ms |");
            report.AppendLine("|---|---|---|---|");
            foreach (var runtime in new[] { "runc", "gvisor" })
            {
                var session = await agent.CreateSessionAsync(new SessionRequest { Image = image, RuntimeClass = runtime });
                try
                {
                    var times = new List<double>();
                    for (var i = 0; i < runs + 20; i++)
                    {
                        var sw = Stopwatch.StartNew();
                        await foreach (var _ in agent.ExecuteAsync(session.KernelId, "p" + i.ToString(CultureInfo.InvariantCulture), ExecutionMode.Query, "pass"))
                        {
                        }
                        if (i >= 20)
                            times.Add(sw.Elapsed.TotalMilliseconds);
                    }
                    report.AppendLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {runtime} | {times.Count} | {Stats.Percentile(times, 50):0.000} | {Stats.Percentile(times, 99):0.000} |"));
                }
                finally
                {
                    await agent.DestroySessionAsync(session.KernelId);
                }
            }
        }
        finally
        {
            await agent.DisposeAsync();
            BenchAgent.RemoveDataDir(dataDir);
        }
    }
}
