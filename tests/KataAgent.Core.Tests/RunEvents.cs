using KataAgent.Runner.Protocol;

namespace KataAgent.Core.Tests;

/// <summary>Folds a run's streamed events into its final result, and reads its output back.</summary>
public static class RunEvents
{
    /// <summary>The streamed output folded into the final result's console.</summary>
    public static async Task<ExecutionResult> CollectAsync(IAsyncEnumerable<ExecutionEvent> events)
    {
        await using var e = events.GetAsyncEnumerator();
        return await CollectAsync(e);
    }

    /// <summary>The rest of a run's streamed output folded into its final result's console.</summary>
    public static async Task<ExecutionResult> CollectAsync(IAsyncEnumerator<ExecutionEvent> events)
    {
        var console = new List<ConsoleItem>();
        while (await events.MoveNextAsync())
        {
            switch (events.Current)
            {
                case OutputEvent o:
                    console.Add(o.Item);
                    break;
                case ResultEvent r:
                    return r.Result with { Console = console };
            }
        }
        throw new InvalidOperationException("the run produced no result");
    }

    /// <summary>The run's output of one kind (stdout by default), concatenated.</summary>
    public static string Out(ExecutionResult result, string kind = "stdout") =>
        string.Concat(result.Console.Where(c => c.Kind == kind).Select(c => c.Data));
}
