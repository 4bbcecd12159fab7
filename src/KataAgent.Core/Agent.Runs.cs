using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using KataAgent.Core.Runs;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core;

/// <summary>
/// Durable runs (docs/DURABLE-RUNS.md): every run's output goes into the session's run log as it is collected; a run
/// whose caller went away mid-run is collected on by the agent, so that nothing is lost; a client can attach to a run
/// from any sequence number and follow it live; after an agent restart, the run a session's runner still holds is
/// adopted (the runner replays its output) and collected again.
/// </summary>
public sealed partial class Agent
{
    private readonly ConcurrentDictionary<string, SessionRunLog> _runLogs = new(StringComparer.Ordinal);

    /// <summary>The runs the agent knows of the session (the last <see cref="AgentOptions.KeptRunsPerSession"/>), oldest first.</summary>
    public IReadOnlyList<RunSummary> ListRuns(string kernelId) => RunLogOf(GetSession(kernelId)).List();

    /// <summary>
    /// The run's events from <paramref name="fromSeq"/> on (0: all of it), then live until it ends. Null
    /// <paramref name="runId"/>: the session's run still going, else its last run. Cancelling only detaches: the run
    /// goes on. An attached client keeps the session from going idle.
    /// </summary>
    public IAsyncEnumerable<RunLogEntry> AttachRunAsync(string kernelId, string? runId, long fromSeq, CancellationToken cancellationToken = default)
    {
        var session = GetSession(kernelId);
        var log = RunLogOf(session);
        var chosen = runId ?? log.DefaultRunId() ?? throw new RunNotFoundException($"session {kernelId} has no runs to attach to");
        session.Touch(DateTimeOffset.UtcNow);
        return log.FollowAsync(chosen, fromSeq, () => session.Touch(DateTimeOffset.UtcNow), cancellationToken);
    }

    private SessionRunLog RunLogOf(Session session)
    {
        // Logs of sessions that are gone are dropped here rather than in the destroy path.
        foreach (var stale in _runLogs.Keys.Where(id => !_registry.Contains(id)).ToList())
            _runLogs.TryRemove(stale, out _);
        return _runLogs.GetOrAdd(session.KernelId, _ => new SessionRunLog(Options.RunLogMaxBytes, Options.KeptRunsPerSession));
    }

    /// <summary>
    /// Wraps an execute's event stream: every event goes into the run log; when the caller stops reading before the
    /// run reached its end or a point where it waits for the caller (input, or a `continued` it will pick up), the
    /// agent collects the rest of the run into the log itself.
    /// </summary>
    private async IAsyncEnumerable<ExecutionEvent> LogRunAsync(Session session, string runId, ExecutionMode mode,
        IAsyncEnumerable<ExecutionEvent> events, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var log = RunLogOf(session);
        if (mode is ExecutionMode.Query or ExecutionMode.Batch)
            log.Begin(runId);
        var handedBack = false;
        try
        {
            await foreach (var executionEvent in events.WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                log.Append(runId, executionEvent);
                if (executionEvent is ResultEvent)
                    handedBack = true;
                yield return executionEvent;
            }
        }
        finally
        {
            if (!handedBack && !log.IsEnded(runId) && !session.EndingToken.IsCancellationRequested)
                CollectInBackground(session, runId);
        }
    }

    /// <summary>Collects a run nobody collects (its caller went away, or a new agent adopted it) into the run log, to its end or its next input prompt.</summary>
    private void CollectInBackground(Session session, string runId)
    {
        var log = RunLogOf(session);
        if (!log.TryClaimCollector(runId))
            return;
        _logger.LogInformation("session {KernelId}: run {RunId} is collected by the agent (its caller went away)", session.KernelId, runId);
        _ = Task.Run(async () =>
        {
            session.BeginRun();
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token, session.EndingToken);
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    var paused = false;
                    await foreach (var executionEvent in session.Runner.ExecuteStreamingAsync(runId, ExecutionMode.Continue, "", new ExecutionOptions(), stop.Token)
                        .ConfigureAwait(false))
                    {
                        log.Append(runId, executionEvent);
                        if (executionEvent is ResultEvent { Result: var result })
                            paused = result.RunEnded || result.Status == ExecutionStatus.WaitingInput;
                    }
                    if (paused)
                        break;
                }
            }
            catch (RunInProgressException)
            {
                // A caller came back for it (mode continue): that call logs the rest.
            }
            catch (NoActiveRunException e)
            {
                log.Abort(runId, $"the run is no longer active: {e.Message}");
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                // The agent stops (a new one adopts the run) or the session ends.
            }
            catch (Exception e)
            {
                _logger.LogWarning(e, "session {KernelId}: collecting run {RunId} failed", session.KernelId, runId);
                log.Abort(runId, $"collecting the run failed: {e.Message}");
            }
            finally
            {
                log.ReleaseCollector(runId);
                session.EndRun();
            }
        }, CancellationToken.None);
    }

    /// <summary>After the recovery at start-up: each recovered session's runner may hold a run the previous agent was collecting.</summary>
    private async Task ResumeRunsAsync(CancellationToken cancellationToken)
    {
        foreach (var session in _registry.Sessions.ToList())
        {
            if (!session.Runner.IsSequenced || session.EndReason is not null)
                continue;
            try
            {
                if (await session.Runner.ResumeAsync(includeEnded: true, cancellationToken).ConfigureAwait(false) is { } adopted)
                {
                    _logger.LogInformation("session {KernelId}: resumed run {RunId} ({State})", session.KernelId, adopted.RunId,
                        adopted.Ended ? "ended, replaying its output" : "in progress");
                    RunLogOf(session).Begin(adopted.RunId);
                    CollectInBackground(session, adopted.RunId);
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _logger.LogWarning(e, "session {KernelId}: cannot resume its runner's runs", session.KernelId);
            }
        }
    }
}
