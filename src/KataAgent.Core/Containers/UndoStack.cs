using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Containers;

/// <summary>
/// Every create step registers how to take itself back; a failure later on runs the undos in
/// reverse. Modelled on the deferred cleanups of containerd's Go client.
/// </summary>
public sealed class UndoStack(ILogger logger) : IAsyncDisposable
{
    private readonly Stack<(string Name, Func<CancellationToken, Task> Undo)> _steps = new();
    private bool _committed;

    public void Push(string name, Func<CancellationToken, Task> undo) => _steps.Push((name, undo));

    /// <summary>The work succeeded: keep everything.</summary>
    public void Commit()
    {
        _committed = true;
        _steps.Clear();
    }

    /// <summary>Runs every undo, newest first, even when some fail; returns what failed.</summary>
    public async Task<IReadOnlyList<Exception>> RollbackAsync(CancellationToken cancellationToken = default)
    {
        var failures = new List<Exception>();
        while (_steps.TryPop(out var step))
        {
            try
            {
                await step.Undo(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                logger.LogWarning(e, "undo of {Step} failed", step.Name);
                failures.Add(new InvalidOperationException($"undo of '{step.Name}' failed: {e.Message}", e));
            }
        }
        return failures;
    }

    /// <summary>
    /// The one rollback of a failed step (create, restart, container launch): runs every undo, then returns what to
    /// throw — the failure wrapped by <paramref name="wrap"/> to name the step, in an <see cref="AggregateException"/>
    /// with the undo failures if any undo failed. A failure that is the caller's own (<paramref name="isCallersFault"/>,
    /// e.g. bad input) comes back as it is when the rollback was clean: rethrow it unchanged.
    /// </summary>
    public async Task<Exception> RollBackAfterAsync(string step, Exception failure, Func<string, Exception, Exception> wrap,
        Func<Exception, bool>? isCallersFault = null)
    {
        ArgumentNullException.ThrowIfNull(wrap);
        var failures = await RollbackAsync(CancellationToken.None).ConfigureAwait(false);
        if (failures.Count == 0 && isCallersFault?.Invoke(failure) == true)
            return failure;
        var error = wrap(step, failure);
        return failures.Count > 0
            ? new AggregateException(error.Message + $" (and {failures.Count} undo step(s) failed)", [error, .. failures])
            : error;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_committed)
            await RollbackAsync(CancellationToken.None).ConfigureAwait(false);
    }
}
