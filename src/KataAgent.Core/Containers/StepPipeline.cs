using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Containers;

/// <summary>
/// One step of a <see cref="StepPipeline{TSelf, TIn, TOut}"/>: takes what the step before it returned, registers its
/// undo on <paramref name="undo"/> as soon as there is something to undo, and returns what the next step works on.
/// </summary>
public delegate Task<TOut> PipelineStep<in TSelf, in TIn, TOut>(TSelf self, TIn state, UndoStack undo, CancellationToken cancellationToken);

/// <summary>How one run of a pipeline reports, is tested, and fails.</summary>
public sealed record StepRunOptions
{
    /// <summary>Wraps a step's failure, after the rollback, into the caller's exception naming the step.</summary>
    public required Func<string, Exception, Exception> Wrap { get; init; }

    /// <summary>Failures that are the caller's to fix (bad input): thrown as they are, unwrapped, when the rollback was clean.</summary>
    public Func<Exception, bool>? IsCallersFault { get; init; }

    /// <summary>Told each step's name as it starts.</summary>
    public IProgress<string>? Progress { get; init; }

    /// <summary>Told each step's name and how long it ran, as it completes (not for a step that failed).</summary>
    public Action<string, TimeSpan>? StepCompleted { get; init; }

    /// <summary>Test hook: throws right before the named step, to prove rollback.</summary>
    public string? FailBeforeStep { get; init; }

    /// <summary>Test hook: observes the state after each step that completed.</summary>
    public Func<string, CancellationToken, Task>? AfterStep { get; init; }
}

/// <summary>Starts a <see cref="StepPipeline{TSelf, TIn, TOut}"/>.</summary>
public static class StepPipeline
{
    /// <summary>An empty pipeline whose first step will take <typeparamref name="TIn"/>; steps are instance methods of <typeparamref name="TSelf"/>.</summary>
    public static StepPipeline<TSelf, TIn, TIn> Start<TSelf, TIn>() => StepPipeline<TSelf, TIn, TIn>.Empty;
}

/// <summary>
/// An ordered table of named steps, typed end to end: each step receives what the step before it returned, so no step
/// can read what has not been produced yet. A run stops at the first failing step and rolls back every undo the earlier
/// steps registered (<see cref="UndoStack.RollBackAfterAsync"/>). Immutable: build it once (a static field) and run it
/// many times; <see cref="Then{TNext}(StepPipeline{TSelf, TOut, TNext})"/> appends a whole other pipeline, so a restart
/// can run a tail of the create pipeline.
/// </summary>
public sealed class StepPipeline<TSelf, TIn, TOut>
{
    private readonly Func<TSelf, TIn, StepRun, Task<TOut>> _run;

    private StepPipeline(IReadOnlyList<string> stepNames, Func<TSelf, TIn, StepRun, Task<TOut>> run)
    {
        StepNames = stepNames;
        _run = run;
    }

    internal static StepPipeline<TSelf, TIn, TIn> Empty { get; } = new([], (_, input, _) => Task.FromResult(input));

    /// <summary>The steps in the order they run.</summary>
    public IReadOnlyList<string> StepNames { get; }

    /// <summary>This pipeline followed by the step <paramref name="name"/>.</summary>
    public StepPipeline<TSelf, TIn, TNext> Then<TNext>(string name, PipelineStep<TSelf, TOut, TNext> step)
    {
        var run = _run;
        return new([.. StepNames, name], async (self, input, stepRun) =>
        {
            var state = await run(self, input, stepRun).ConfigureAwait(false);
            return await stepRun.StepAsync(name, ct => step(self, state, stepRun.Undo, ct)).ConfigureAwait(false);
        });
    }

    /// <summary>This pipeline followed by every step of <paramref name="rest"/>.</summary>
    public StepPipeline<TSelf, TIn, TNext> Then<TNext>(StepPipeline<TSelf, TOut, TNext> rest)
    {
        ArgumentNullException.ThrowIfNull(rest);
        var run = _run;
        var next = rest._run;
        return new([.. StepNames, .. rest.StepNames], async (self, input, stepRun) =>
            await next(self, await run(self, input, stepRun).ConfigureAwait(false), stepRun).ConfigureAwait(false));
    }

    /// <summary>
    /// Runs every step. On success the undos are dropped and the last step's result returned; on failure everything
    /// done so far is undone and the failure thrown as <see cref="StepRunOptions"/> says.
    /// </summary>
    public async Task<TOut> RunAsync(TSelf self, TIn input, StepRunOptions options, ILogger logger, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var undo = new UndoStack(logger);
        await using var undoDisposal = undo.ConfigureAwait(false);
        var result = await _run(self, input, new StepRun(undo, options, cancellationToken)).ConfigureAwait(false);
        undo.Commit();
        return result;
    }
}

/// <summary>One run of a pipeline: its undo stack, hooks and token; runs a single step with the shared failure handling.</summary>
internal sealed class StepRun(UndoStack undo, StepRunOptions options, CancellationToken cancellationToken)
{
    public UndoStack Undo { get; } = undo;

    public async Task<T> StepAsync<T>(string name, Func<CancellationToken, Task<T>> step)
    {
        options.Progress?.Report(name);
        try
        {
            if (options.FailBeforeStep == name)
                throw new InvalidOperationException($"injected failure before step '{name}'");
            var started = Stopwatch.GetTimestamp();
            var result = await step(cancellationToken).ConfigureAwait(false);
            options.StepCompleted?.Invoke(name, Stopwatch.GetElapsedTime(started));
            if (options.AfterStep is not null)
                await options.AfterStep(name, cancellationToken).ConfigureAwait(false);
            return result;
        }
        catch (Exception e)
        {
            var error = await Undo.RollBackAfterAsync(name, e, options.Wrap, options.IsCallersFault).ConfigureAwait(false);
            if (ReferenceEquals(error, e))
                throw;
            throw error;
        }
    }
}
