using System.Diagnostics;
using System.Globalization;
using System.Text;
using KataAgent.Core;
using KataAgent.Core.Containers;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Bench;

/// <summary>Issue 8's figures, each next to its baseline, on runc and gVisor, in one run.</summary>
internal static class SessionBench
{
    /// <summary>Only create → runner answers and destroy, next to a bare container, on runc and gVisor.</summary>
    public static async Task RunCreateOnlyAsync(int runs, IReadOnlyList<string> runtimes, StringBuilder report)
    {
        var dataDir = Path.Combine("/tmp", "kab-" + Guid.NewGuid().ToString("N")[..8]);
        var (agent, image) = await BenchAgent.StartAsync(dataDir);
        try
        {
            report.AppendLine("| figure | runtime | n | p50 ms | p99 ms | baseline p50 ms | ratio |");
            report.AppendLine("|---|---|---|---|---|---|---|");
            foreach (var runtime in runtimes)
                await CreateAndDestroyAsync(agent, image, dataDir, runtime, runs, report);
        }
        finally
        {
            await agent.DisposeAsync();
            BenchAgent.RemoveDataDir(dataDir);
        }
    }

    private static async Task CreateAndDestroyAsync(Agent agent, string image, string dataDir, string runtime, int runs, StringBuilder report)
    {
        var imageDetails = (await agent.Services.Images.FindAsync(image))!;
        var resolved = new ResolvedImage(image, imageDetails.Config, imageDetails.ChainId);
        var runtimeClass = agent.RuntimeClasses.Resolve(runtime).Class;
        var create = new List<double>();
        var destroy = new List<double>();
        var bare = new List<double>();
        var steps = new Dictionary<string, List<double>>(StringComparer.Ordinal);
        for (var i = 0; i < runs + 1; i++)
        {
            var sw = Stopwatch.StartNew();
            var session = await agent.CreateSessionAsync(new SessionRequest { Image = image, RuntimeClass = runtime });
            var createMs = sw.Elapsed.TotalMilliseconds;
            if (i > 0)
            {
                // What the create itself measured per step (Session.CreateSteps, also on the API's SessionInfo).
                foreach (var timing in session.CreateSteps)
                    (steps.TryGetValue(timing.Step, out var list) ? list : steps[timing.Step] = []).Add(timing.Elapsed.TotalMilliseconds);
            }
            sw.Restart();
            await agent.DestroySessionAsync(session.KernelId);
            var destroyMs = sw.Elapsed.TotalMilliseconds;
            var bareMs = await BareContainerMsAsync(agent, dataDir, resolved, runtimeClass);
            if (i == 0)
                continue; // warm-up
            create.Add(createMs);
            destroy.Add(destroyMs);
            bare.Add(bareMs);
        }
        report.AppendLine(Row("create → runner answers", runtime, create, bare));
        foreach (var (step, list) in steps)
            report.AppendLine(Row($"  create step '{step}'", runtime, list, null));
        report.AppendLine(Row("destroy → all reaped", runtime, destroy, null));
    }

    public static async Task RunAsync(int execRuns, int deathRuns, int concurrent, TimeSpan idle, StringBuilder report, int createRuns = 10)
    {
        var dataDir = Path.Combine("/tmp", "kab-" + Guid.NewGuid().ToString("N")[..8]);
        var (agent, image) = await BenchAgent.StartAsync(dataDir);
        try
        {
            report.AppendLine("| figure | runtime | n | p50 ms | p99 ms | baseline p50 ms | ratio |");
            report.AppendLine("|---|---|---|---|---|---|---|");
            foreach (var runtime in new[] { "runc", "gvisor" })
            {
                // 1. create -> ready vs bare containerd (container + task + first output), per step.
                await CreateAndDestroyAsync(agent, image, dataDir, runtime, createRuns, report);

                var session2 = await agent.CreateSessionAsync(new SessionRequest { Image = image, RuntimeClass = runtime });
                try
                {
                    // 2. exec round trip of `pass`.
                    var exec = new List<double>();
                    for (var i = 0; i < execRuns + 10; i++)
                    {
                        var sw = Stopwatch.StartNew();
                        await foreach (var _ in agent.ExecuteAsync(session2.KernelId, "b" + i.ToString(CultureInfo.InvariantCulture), ExecutionMode.Query, "pass"))
                        {
                        }
                        if (i >= 10)
                            exec.Add(sw.Elapsed.TotalMilliseconds);
                    }
                    report.AppendLine(Row("exec round trip of `pass`", runtime, exec, null));

                    // 3. upload / download 100 MiB vs cp on the same disk.
                    var source = Path.Combine(dataDir, "payload.bin");
                    await using (var f = File.Create(source))
                    {
                        var chunk = new byte[1 << 20];
                        Random.Shared.NextBytes(chunk);
                        for (var i = 0; i < 100; i++)
                            await f.WriteAsync(chunk);
                    }
                    var files = agent.Files(session2.KernelId);
                    var up = new List<double>();
                    var down = new List<double>();
                    var cp = new List<double>();
                    for (var i = 0; i < 5; i++)
                    {
                        var sw = Stopwatch.StartNew();
                        await using (var input = File.OpenRead(source))
                            await files.UploadAsync("payload.bin", input, 200L << 20, createParents: false);
                        up.Add(sw.Elapsed.TotalMilliseconds);
                        sw.Restart();
                        await using (var output = File.Create(source + ".down"))
                        await using (var download = await files.OpenDownloadAsync("payload.bin"))
                            await download.CopyToAsync(output);
                        down.Add(sw.Elapsed.TotalMilliseconds);
                        sw.Restart();
                        using (var process = Process.Start("cp", [source, source + ".cp"]))
                            await process.WaitForExitAsync();
                        cp.Add(sw.Elapsed.TotalMilliseconds);
                    }
                    report.AppendLine(Row("upload 100 MiB", runtime, up, cp));
                    report.AppendLine(Row("download 100 MiB", runtime, down, cp));
                }
                finally
                {
                    await agent.DestroySessionAsync(session2.KernelId);
                }

                // 4. death detection: kill the session's process from outside -> lifecycle event.
                var death = new List<double>();
                for (var i = 0; i < deathRuns; i++)
                {
                    var victim = await agent.CreateSessionAsync(new SessionRequest { Image = image, RuntimeClass = runtime });
                    using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
                    var seen = new TaskCompletionSource<DateTimeOffset>();
                    using var subscription = agent.Subscribe();
                    var watch = Task.Run(async () =>
                    {
                        await foreach (var e in subscription.ReadAllAsync(timeout.Token))
                        {
                            if (e.KernelId == victim.KernelId && e.Kind == "exited")
                            {
                                seen.TrySetResult(DateTimeOffset.UtcNow);
                                return;
                            }
                        }
                    });
                    var task = await agent.Containerd.Tasks.GetAsync(victim.Record.ContainerId);
                    var sw = Stopwatch.StartNew();
                    _ = Posix.Kill((int)task.Pid, 9);
                    await seen.Task.WaitAsync(timeout.Token);
                    death.Add(sw.Elapsed.TotalMilliseconds);
                    await timeout.CancelAsync();
                    try
                    {
                        await watch;
                    }
                    catch (OperationCanceledException)
                    {
                    }
                    await agent.DestroySessionAsync(victim.KernelId);
                }
                report.AppendLine(Row("death detection (kill -9 → event)", runtime, death, null));
            }

            // 6. concurrent creation.
            var concurrentTimes = new List<double>();
            var rssBefore = Rss();
            var results = await Task.WhenAll(Enumerable.Range(0, concurrent).Select(async i =>
            {
                var sw = Stopwatch.StartNew();
                try
                {
                    var s = await agent.CreateSessionAsync(new SessionRequest { Image = image, RuntimeClass = i % 2 == 0 ? "runc" : "gvisor" });
                    lock (concurrentTimes)
                        concurrentTimes.Add(sw.Elapsed.TotalMilliseconds);
                    return (Ok: true, Id: s.KernelId, Error: "");
                }
                catch (Exception e)
                {
                    return (Ok: false, Id: "", Error: e.Message);
                }
            }));
            var live = results.Count(r => r.Ok);
            var rssPerSession = live == 0 ? 0 : (Rss() - rssBefore) / live;
            report.AppendLine(Row($"{concurrent} concurrent creates ({live} ok)", "runc+gvisor", concurrentTimes, null));
            report.AppendLine(CultureInfo.InvariantCulture, $"\nConcurrent creates: {live}/{concurrent} succeeded; agent RSS per live session: {rssPerSession / 1024.0:0} KiB.");
            foreach (var failure in results.Where(r => !r.Ok).Take(3))
                report.AppendLine(CultureInfo.InvariantCulture, $"- failure: {failure.Error.Split('\n')[0]}");

            // 7. idle agent with 10 live sessions.
            foreach (var extra in results.Where(r => r.Ok).Skip(10))
                await agent.DestroySessionAsync(extra.Id);
            var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
            await Task.Delay(idle);
            var cpu = Process.GetCurrentProcess().TotalProcessorTime - cpuBefore;
            report.AppendLine(CultureInfo.InvariantCulture,
                $"Idle in-process agent (this bench's own process, with its payload buffers) with {agent.Sessions.Count} live sessions for {idle.TotalSeconds:0} s: RSS {Rss() / (1024.0 * 1024):0} MiB, CPU {cpu.TotalMilliseconds:0} ms ({cpu.TotalMilliseconds / idle.TotalMilliseconds * 100:0.00} % of one core).");
            foreach (var s in agent.Sessions)
                await agent.DestroySessionAsync(s.KernelId);
            report.AppendLine(CultureInfo.InvariantCulture, $"\nLeak census after the bench: {await AgentLeakCensus.TakeAsync(agent)}");
            // What an operator sees: a `kata-agent serve` process of its own (all settings: the idle-rss scenario).
            report.AppendLine();
            await IdleRssBench.RunAsync(sessions: 10, idle: TimeSpan.FromSeconds(30), IdleRssBench.Variants.Take(1).ToList(), report);
        }
        finally
        {
            await agent.DisposeAsync();
            BenchAgent.RemoveDataDir(dataDir);
        }
    }

    private static long Rss()
    {
        using var process = Process.GetCurrentProcess();
        process.Refresh();
        return process.WorkingSet64;
    }

    /// <summary>The baseline: a bare container through the containerd API (create, start, first output, reaped), in ms.</summary>
    internal static async Task<double> BareContainerMsAsync(Agent agent, string dataDir, ResolvedImage image, KataAgent.Containerd.Runtime.RuntimeClass runtimeClass)
    {
        var sw = Stopwatch.StartNew();
        await new OneShotRunner(agent.Containerd, dataDir, NullLogger.Instance).RunAsync(
            new ContainerLaunch("bare-" + Guid.NewGuid().ToString("N")[..10], image, runtimeClass) { Args = ["/bin/sh", "-c", "echo ready"] },
            TimeSpan.FromMinutes(2));
        return sw.Elapsed.TotalMilliseconds;
    }

    internal static string Row(string what, string runtime, IReadOnlyList<double> ms, IReadOnlyList<double>? baseline)
    {
        var p50 = Stats.Percentile(ms, 50);
        var b = baseline is null ? double.NaN : Stats.Percentile(baseline, 50);
        return string.Create(CultureInfo.InvariantCulture,
            $"| {what} | {runtime} | {ms.Count} | {p50:0.00} | {Stats.Percentile(ms, 99):0.00} | {(double.IsNaN(b) ? "" : b.ToString("0.00", CultureInfo.InvariantCulture))} | {(double.IsNaN(b) ? "" : (p50 / b).ToString("0.00", CultureInfo.InvariantCulture))} |");
    }
}

internal static partial class Posix
{
    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill")]
    public static partial int Kill(int pid, int signal);
}
