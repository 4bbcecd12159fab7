using System.Text;
using KataAgent.Runner.Protocol;

namespace KataAgent.Runner.Tests;

internal static class RunnerTestHelpers
{
    /// <summary>Generous: the machine may be busy; no test asserts on timing.</summary>
    public static CancellationToken Limit(int seconds = 120) => new CancellationTokenSource(TimeSpan.FromSeconds(seconds)).Token;

    /// <summary>Executes and keeps collecting through `continued` until another status comes; console merged across calls.</summary>
    public static async Task<ExecutionResult> ExecuteToStatusAsync(this KernelRunnerClient client, string runId, ExecutionMode mode,
        string text, CancellationToken cancellationToken, ExecutionOptions? options = null)
    {
        var console = new List<ConsoleItem>();
        ExecutionResult result = await client.ExecuteAsync(runId, mode, text, options, cancellationToken);
        console.AddRange(result.Console);
        while (result.Status == ExecutionStatus.Continued)
        {
            result = await client.ExecuteAsync(runId, ExecutionMode.Continue, "", options, cancellationToken);
            console.AddRange(result.Console);
        }
        return result with { Console = console };
    }

    public static string Text(this ExecutionResult result, string kind)
    {
        var text = new StringBuilder();
        foreach (ConsoleItem item in result.Console.Where(item => item.Kind == kind))
        {
            text.Append(item.Data);
        }
        return text.ToString();
    }

    public static string Describe(this ExecutionResult result) =>
        $"status={result.Status} exit={result.ExitCode} stdout=[{result.Text("stdout")}] stderr=[{result.Text("stderr")}]";
}
