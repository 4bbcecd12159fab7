using KataAgent.Core.Containers;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Core.Tests;

/// <summary>The pipeline and its one rollback, without containerd: order, typed hand-over, what a failure becomes.</summary>
public sealed class StepPipelineTests
{
    private sealed class Journal
    {
        public List<string> Entries { get; } = [];

        public Task<T> Do<T>(string step, T result, UndoStack undo, bool undoFails = false)
        {
            Entries.Add("do " + step);
            undo.Push(step, _ =>
            {
                Entries.Add("undo " + step);
                return undoFails ? throw new IOException("undo broke") : Task.CompletedTask;
            });
            return Task.FromResult(result);
        }
    }

    private sealed class CallersFault(string message) : Exception(message);

    private sealed class Wrapped(string step, Exception inner) : Exception($"failed at step '{step}': {inner.Message}", inner)
    {
        public string Step { get; } = step;
    }

    private static readonly StepPipeline<Journal, int, string> Tail = StepPipeline.Start<Journal, int>()
        .Then("format", static (j, n, undo, _) => j.Do("format", $"n={n}", undo))
        .Then("finish", static (j, s, undo, _) => j.Do("finish", s + "!", undo));

    private static readonly StepPipeline<Journal, string, string> Whole = StepPipeline.Start<Journal, string>()
        .Then("parse", static (j, text, undo, _) => j.Do("parse", int.Parse(text, System.Globalization.CultureInfo.InvariantCulture), undo))
        .Then("double", static (j, n, undo, _) => j.Do("double", n * 2, undo))
        .Then(Tail);

    private static StepRunOptions Options(string? failBefore = null, Func<Exception, bool>? isCallersFault = null, IProgress<string>? progress = null) => new()
    {
        Wrap = (step, e) => new Wrapped(step, e),
        IsCallersFault = isCallersFault,
        FailBeforeStep = failBefore,
        Progress = progress,
    };

    [Fact]
    public async Task Steps_run_in_table_order_each_on_what_the_one_before_returned_and_nothing_is_undone_on_success()
    {
        var journal = new Journal();
        var started = new List<string>();
        var result = await Whole.RunAsync(journal, "21", Options(progress: new SyncProgress(started)), NullLogger.Instance);
        Assert.Equal("n=42!", result);
        Assert.Equal(["parse", "double", "format", "finish"], Whole.StepNames);
        Assert.Equal(Whole.StepNames, started);
        Assert.Equal(["do parse", "do double", "do format", "do finish"], journal.Entries);

        // A tail runs on its own, as a restart runs the last steps of a create.
        Assert.Equal("n=5!", await Tail.RunAsync(new Journal(), 5, Options(), NullLogger.Instance));
    }

    [Fact]
    public async Task A_failing_step_undoes_every_earlier_step_newest_first_and_is_named()
    {
        var journal = new Journal();
        var e = await Assert.ThrowsAsync<Wrapped>(() => Whole.RunAsync(journal, "21", Options(failBefore: "finish"), NullLogger.Instance));
        Assert.Equal("finish", e.Step);
        Assert.Contains("injected failure before step 'finish'", e.Message, StringComparison.Ordinal);
        Assert.Equal(["do parse", "do double", "do format", "undo format", "undo double", "undo parse"], journal.Entries);
    }

    [Fact]
    public async Task The_callers_fault_surfaces_unwrapped_unless_an_undo_failed_too()
    {
        var pipeline = StepPipeline.Start<Journal, string>()
            .Then("taken", static (j, s, undo, _) => j.Do("taken", s, undo, undoFails: s == "undo fails"))
            .Then<string>("check", static (_, s, _, _) => throw new CallersFault("bad input " + s));
        static bool IsCallersFault(Exception e) => e is CallersFault;

        var clean = new Journal();
        var fault = await Assert.ThrowsAsync<CallersFault>(() => pipeline.RunAsync(clean, "x", Options(isCallersFault: IsCallersFault), NullLogger.Instance));
        Assert.Equal("bad input x", fault.Message);
        Assert.Equal(["do taken", "undo taken"], clean.Entries);

        // Without the policy the same failure is a failed step.
        Assert.Equal("check", (await Assert.ThrowsAsync<Wrapped>(() => pipeline.RunAsync(new Journal(), "x", Options(), NullLogger.Instance))).Step);

        var aggregate = await Assert.ThrowsAsync<AggregateException>(() =>
            pipeline.RunAsync(new Journal(), "undo fails", Options(isCallersFault: IsCallersFault), NullLogger.Instance));
        Assert.Contains("(and 1 undo step(s) failed)", aggregate.Message, StringComparison.Ordinal);
        Assert.IsType<Wrapped>(aggregate.InnerExceptions[0]);
        Assert.Contains("undo of 'taken' failed", aggregate.InnerExceptions[1].Message, StringComparison.Ordinal);
    }

    private sealed class SyncProgress(List<string> into) : IProgress<string>
    {
        public void Report(string value) => into.Add(value);
    }
}
