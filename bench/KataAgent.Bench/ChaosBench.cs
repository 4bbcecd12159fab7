using System.Diagnostics;
using System.Globalization;
using System.Text;
using KataAgent.Core;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Bench;

/// <summary>
/// Kill -9 the agent at random points while it creates sessions, restart it, restart containerd
/// mid-run; at the end the surviving sessions must still run code and, once destroyed, the census be zero.
/// </summary>
internal static class ChaosBench
{
    public static async Task<bool> RunAsync(int kills, StringBuilder report)
    {
        var dataDir = Path.Combine("/tmp", "kac-" + Guid.NewGuid().ToString("N")[..8]);
        // Build and import once, so the children spend their lives creating sessions.
        var (setup, _) = await BenchAgent.StartAsync(dataDir, slot: 2);
        await setup.DisposeAsync();
        var random = new Random(12345);
        var containerdRestarts = 0;
        try
        {
            for (var i = 0; i < kills; i++)
            {
                using var child = Process.Start(new ProcessStartInfo(Environment.ProcessPath!, ["chaos-child", dataDir])
                {
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                })!;
                _ = child.StandardOutput.ReadToEndAsync();
                _ = child.StandardError.ReadToEndAsync();
                await Task.Delay(TimeSpan.FromMilliseconds(random.Next(1500, 6000)));
                child.Kill();
                await child.WaitForExitAsync();
                if (i % 7 == 3)
                {
                    // containerd dies too, now and then.
                    var pidFile = Path.Combine(dataDir, "containerd", "containerd.pid");
                    if (File.Exists(pidFile) && int.TryParse(await File.ReadAllTextAsync(pidFile), out var pid))
                    {
                        _ = Posix.Kill(pid, 9);
                        containerdRestarts++;
                    }
                }
                await Console.Error.WriteLineAsync($"chaos: kill {i + 1}/{kills}");
            }

            await Console.Error.WriteLineAsync("chaos: starting the final agent (recovery)");
            await using var agent = await Agent.StartAsync(BenchAgent.Options(dataDir, slot: 2), NullLoggerFactory.Instance);
            var survivors = agent.Sessions.ToList();
            await Console.Error.WriteLineAsync($"chaos: {survivors.Count} sessions recovered; checking each runs code");
            var working = 0;
            foreach (var session in survivors)
            {
                var output = new StringBuilder();
                using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
                try
                {
                    await foreach (var e in agent.ExecuteAsync(session.KernelId, "chaos-check", ExecutionMode.Query, "print(40 + 2)", cancellationToken: limit.Token))
                    {
                        if (e is OutputEvent { Item.Kind: "stdout" } o)
                            output.Append(o.Item.Data);
                    }
                }
                catch (Exception e) when (e is OperationCanceledException or RunnerUnavailableException)
                {
                    report.AppendLine(CultureInfo.InvariantCulture, $"- session {session.KernelId} ({session.Record.RuntimeClass}) did not answer: {e.Message}");
                }
                if (output.ToString().Trim() == "42")
                    working++;
            }
            foreach (var session in survivors)
                await agent.DestroySessionAsync(session.KernelId);
            var census = await AgentLeakCensus.TakeAsync(agent);
            report.AppendLine(CultureInfo.InvariantCulture,
                $"Chaos: agent killed -9 {kills} times mid-create, containerd killed {containerdRestarts} times; {survivors.Count} sessions recovered, {working} of them still executed code.");
            SoakBench.AppendCensus(report, census);
            return census.IsClean && working == survivors.Count;
        }
        finally
        {
            BenchAgent.RemoveDataDir(dataDir);
        }
    }

    /// <summary>The victim: an agent that creates and destroys sessions until it is killed.</summary>
    public static async Task ChildAsync(string dataDir)
    {
        var agent = await Agent.StartAsync(BenchAgent.Options(dataDir, slot: 2), NullLoggerFactory.Instance);
        var image = "kata-agent/python:3-bookworm";
        for (var i = 0; ; i++)
        {
            try
            {
                var session = await agent.CreateSessionAsync(new SessionRequest { Image = image, RuntimeClass = i % 2 == 0 ? "runc" : "gvisor" });
                if (i % 3 == 0)
                    await agent.DestroySessionAsync(session.KernelId);
            }
            catch (Exception e)
            {
                await Console.Error.WriteLineAsync(e.Message);
                await Task.Delay(200);
            }
        }
    }
}
