using System.Diagnostics;
using System.Globalization;
using KataAgent.Bench;

// Benchmarks, each measured next to its baseline in the same run. Not part of CI.
// Usage: kata-agent-bench [echo] [--runs N]
var runs = 10;
for (var i = 0; i < args.Length; i++)
{
    if (args[i] == "--runs" && i + 1 < args.Length)
        runs = int.Parse(args[++i], CultureInfo.InvariantCulture);
}
var scenario = args.FirstOrDefault(a => !a.StartsWith("--", StringComparison.Ordinal) && !int.TryParse(a, out _)) ?? "echo";
var stopwatch = Stopwatch.StartNew();
switch (scenario)
{
    case "echo":
        await EchoBench.RunAsync(runs);
        break;
    default:
        Console.Error.WriteLine($"unknown scenario '{scenario}' (echo)");
        return 2;
}
Console.Error.WriteLine($"bench finished in {stopwatch.Elapsed.TotalSeconds:0.0} s");
return 0;
