using System.Diagnostics;
using System.Globalization;
using KataAgent.Bench;

// Benchmarks, each measured next to its baseline in the same run. Not part of CI.
// Usage: kata-agent-bench [echo|exec|create|sessions|idle-rss|soak|chaos] [--quick] [--runs N] [--cycles N] [--runtime CLASS]... [--out docs/PERFORMANCE.md]
// KATA_RUNNER_DIR picks another published runner (e.g. to compare two builds of it back to back).
var runs = 20;
var cycles = 500;
string? outFile = null;
var runtimes = new List<string>();
var quick = false; // sessions: fewer runs of everything (a loaded machine, a quick look)
var positional = new List<string>();
for (var i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--runs" when i + 1 < args.Length: runs = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--cycles" when i + 1 < args.Length: cycles = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--out" when i + 1 < args.Length: outFile = args[++i]; break;
        case "--runtime" when i + 1 < args.Length: runtimes.Add(args[++i]); break;
        case "--quick": quick = true; break;
        default: positional.Add(args[i]); break;
    }
}
var scenario = positional.FirstOrDefault() ?? "sessions";
var stopwatch = Stopwatch.StartNew();
var report = new System.Text.StringBuilder();
var failed = false;
switch (scenario)
{
    case "echo":
        await EchoBench.RunAsync(runs);
        break;
    case "exec":
        await ExecBench.RunAsync(Math.Max(runs, 1000), report);
        break;
    case "create":
        await SessionBench.RunCreateOnlyAsync(Math.Max(runs, 10), runtimes.Count > 0 ? runtimes : ["runc", "gvisor"], report);
        break;
    case "sessions":
        if (quick)
            await SessionBench.RunAsync(execRuns: 200, deathRuns: 10, concurrent: 20, idle: TimeSpan.FromSeconds(20), report, createRuns: 5);
        else
            await SessionBench.RunAsync(execRuns: Math.Max(runs, 1000), deathRuns: 50, concurrent: 50, idle: TimeSpan.FromSeconds(60), report);
        break;
    case "idle-rss":
        // --quick: only the settings as shipped.
        await IdleRssBench.RunAsync(sessions: 10, idle: TimeSpan.FromSeconds(30), quick ? IdleRssBench.Variants.Take(1).ToList() : IdleRssBench.Variants, report);
        break;
    case "soak":
        failed = !await SoakBench.RunAsync(cycles, report);
        break;
    case "soak-pool":
        failed = !await PoolBench.SoakAsync(cycles, report);
        break;
    case "pool":
        await PoolBench.RunAsync(quick ? 5 : Math.Max(runs, 10), runtimes.Count > 0 ? runtimes : ["runc", "gvisor"], report);
        break;
    case "chaos":
        failed = !await ChaosBench.RunAsync(kills: runs, report);
        break;
    case "chaos-child":
        await ChaosBench.ChildAsync(positional[1]);
        return 0;
    default:
        await Console.Error.WriteLineAsync($"unknown scenario '{scenario}' (echo, exec, create, sessions, pool, idle-rss, soak, soak-pool, chaos)");
        return 2;
}
if (report.Length > 0)
{
    var text = $"\n## {scenario} — {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC\n\n{MachineDescription()}\n\n{report}";
    Console.WriteLine(text);
    if (outFile is not null)
        await File.AppendAllTextAsync(outFile, text);
}
await Console.Error.WriteLineAsync($"bench finished in {stopwatch.Elapsed.TotalSeconds:0.0} s");
return failed ? 1 : 0;

static string MachineDescription()
{
    var cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";
    var mem = File.ReadLines("/proc/meminfo").First().Split(' ', StringSplitOptions.RemoveEmptyEntries)[1];
    return $"Machine: {Environment.ProcessorCount} cores ({cpu}), {long.Parse(mem, CultureInfo.InvariantCulture) / 1024 / 1024} GiB, kernel {File.ReadAllText("/proc/sys/kernel/osrelease").Trim()}, .NET {Environment.Version}.";
}
