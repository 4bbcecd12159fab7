using System.Globalization;
using System.Runtime.CompilerServices;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core;

/// <summary>
/// Idle timeout, maximum lifetime and the session-level exec timeout (docs/END-REASONS.md, "Timeouts"). A loop checks
/// every session each <see cref="AgentOptions.TimeoutCheckInterval"/>: a warning event comes
/// <see cref="AgentOptions.TimeoutWarningLead"/> before a deadline, then the session is destroyed with the end reason
/// idle-timeout or lifetime-expired. Executes are wrapped to keep the idle clock, to end the session on a run that
/// exceeds the session's exec timeout (exec-timeout, as Backend.AI's manager destroys the kernel), and to tell a
/// waiting execute how its session ended when the runner's connection drops with it.
/// </summary>
public sealed partial class Agent
{
    /// <summary>How long a run whose runner connection dropped waits for the session's exit event (it may come after).</summary>
    private static readonly TimeSpan EndReasonGrace = TimeSpan.FromSeconds(5);

    /// <summary>How long a run that ended with a SIGKILLed session waits for containerd's OOM event that may follow the exit.</summary>
    private static readonly TimeSpan OutOfMemoryRefineGrace = TimeSpan.FromSeconds(1);

    private Task? _timeoutLoop;

    private void StartTimeoutLoop() =>
        _timeoutLoop = Task.Run(() => RunTimeoutLoopAsync(_stop.Token), CancellationToken.None);

    private async Task RunTimeoutLoopAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(Options.TimeoutCheckInterval);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                var sessions = _registry.Sessions.ToList();
                try
                {
                    await TouchSessionsWithServiceTrafficAsync(sessions, DateTimeOffset.UtcNow, cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    _logger.LogWarning(e, "reading service-port traffic failed");
                }
                foreach (var session in sessions)
                {
                    try
                    {
                        await CheckTimeoutsAsync(session, DateTimeOffset.UtcNow, cancellationToken).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is not OperationCanceledException)
                    {
                        _logger.LogWarning(e, "session {KernelId}: checking its timeouts failed", session.KernelId);
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task CheckTimeoutsAsync(Session session, DateTimeOffset now, CancellationToken cancellationToken)
    {
        var state = session.State;
        if (state is not (SessionState.Running or SessionState.Paused) || session.EndReason is not null)
            return;
        // A run in progress is activity; so is a pause, unless configured otherwise (the paused session cannot act).
        if (session.ActiveRuns > 0 || (state == SessionState.Paused && !Options.PausedCountsAsIdle))
            session.Touch(now);

        if (session.LifetimeDeadline is { } lifetimeEnd)
        {
            if (now >= lifetimeEnd)
            {
                await EndByTimeoutAsync(session, new SessionEndReason(SessionEndKind.LifetimeExpired, now), cancellationToken).ConfigureAwait(false);
                return;
            }
            if (now >= lifetimeEnd - Options.TimeoutWarningLead && session.LifetimeWarnedFor != lifetimeEnd)
            {
                session.LifetimeWarnedFor = lifetimeEnd;
                PublishWarning(session, "lifetime-warning", SessionEndKind.LifetimeExpired, lifetimeEnd, now);
            }
        }
        if (session.IdleDeadline is { } idleEnd)
        {
            if (now >= idleEnd)
            {
                await EndByTimeoutAsync(session, new SessionEndReason(SessionEndKind.IdleTimeout, now), cancellationToken).ConfigureAwait(false);
                return;
            }
            if (now >= idleEnd - Options.TimeoutWarningLead && session.IdleWarnedFor != idleEnd)
            {
                session.IdleWarnedFor = idleEnd;
                PublishWarning(session, "idle-warning", SessionEndKind.IdleTimeout, idleEnd, now);
            }
        }
    }

    private void PublishWarning(Session session, string kind, SessionEndKind ending, DateTimeOffset deadline, DateTimeOffset now)
    {
        var detail = string.Create(CultureInfo.InvariantCulture,
            $"{SessionEndReason.KindName(ending)} in {Math.Max(0, (deadline - now).TotalSeconds):0} s (at {deadline:O}) unless extended (kata-agent session extend {session.KernelId} --by DURATION)");
        _logger.LogInformation("session {KernelId}: {Detail}", session.KernelId, detail);
        _registry.Publish(new SessionEvent(session.KernelId, kind, session.State, null, now, detail));
    }

    /// <summary>The reason first (it wins over the destroy's own), then the destroy: the "destroyed" event carries it.</summary>
    private async Task EndByTimeoutAsync(Session session, SessionEndReason reason, CancellationToken cancellationToken)
    {
        var kept = session.SetEndReason(reason);
        if (!ReferenceEquals(kept, reason))
            return;
        _logger.LogInformation("session {KernelId} ends: {Reason}", session.KernelId, reason.Describe());
        await DestroySessionAsync(session.KernelId, keepScratch: false, DestroyedBy.Api, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Pushes the session's end out by <paramref name="by"/>: its maximum lifetime grows by that much, and its idle
    /// deadline becomes at least the current one (or now) plus that much. Publishes an "extended" event.
    /// </summary>
    public Task<Session> ExtendSessionAsync(string kernelId, TimeSpan by, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (by <= TimeSpan.Zero)
            throw new SessionRequestException($"extend by a positive duration (got {by})");
        var session = GetSession(kernelId);
        if (session.EndReason is { } ended)
            throw new SessionEndedException(session.ToTombstone(ended));
        var now = DateTimeOffset.UtcNow;
        var idleFrom = session.IdleDeadline is { } idle && idle > now ? idle : now;
        session.Extend(by, idleFrom + by);
        var detail = string.Create(CultureInfo.InvariantCulture,
            $"extended by {by}: idle deadline {Describe(session.IdleDeadline)}, lifetime deadline {Describe(session.LifetimeDeadline)}");
        _logger.LogInformation("session {KernelId} {Detail}", kernelId, detail);
        _registry.Publish(new SessionEvent(kernelId, "extended", session.State, null, now, detail));
        return Task.FromResult(session);

        static string Describe(DateTimeOffset? at) => at is { } t ? t.ToString("O", CultureInfo.InvariantCulture) : "none";
    }

    /// <summary>A file transfer keeps the session from going idle.</summary>
    private Session TouchedSession(string kernelId)
    {
        var session = GetSession(kernelId);
        session.Touch(DateTimeOffset.UtcNow);
        return session;
    }

    /// <summary>The session's exec timeout caps the run's own (only the call that starts a run sets its limit).</summary>
    private static (ExecutionOptions? Options, bool SessionLimitGoverns) WithSessionExecTimeout(Session session, ExecutionMode mode, ExecutionOptions? options)
    {
        var limit = session.Timeouts.Exec;
        if (limit <= TimeSpan.Zero || mode is not (ExecutionMode.Query or ExecutionMode.Batch))
            return (options, false);
        if (options?.ExecTimeout is TimeSpan own && own <= limit)
            return (options, false);
        return ((options ?? new ExecutionOptions()) with { ExecTimeout = limit }, true);
    }

    private async IAsyncEnumerable<ExecutionEvent> TrackRunAsync(Session session, string runId, Func<CancellationToken, IAsyncEnumerable<ExecutionEvent>> run,
        bool sessionLimitGoverns, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        session.BeginRun();
        DateTimeOffset? execTimedOut = null;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, session.EndingToken);
        try
        {
            var events = run(stop.Token).GetAsyncEnumerator(stop.Token);
            await using var disposeEvents = events.ConfigureAwait(false);
            while (true)
            {
                bool more;
                Exception? lost = null;
                try
                {
                    more = await events.MoveNextAsync().ConfigureAwait(false);
                }
                catch (RunnerUnavailableException e)
                {
                    more = false;
                    lost = e;
                }
                catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested && session.EndingToken.IsCancellationRequested)
                {
                    // The agent ended the session (destroy, a timeout): its reason is already set.
                    more = false;
                    lost = e;
                }
                if (lost is not null || (more && events.Current is ResultEvent && !session.Runner.IsConnected))
                {
                    // The runner went with the session (or just dropped): say how the session ended when it did.
                    if (await WaitForEndReasonAsync(session, cancellationToken).ConfigureAwait(false) is { } reason)
                        throw new SessionEndedDuringRunException(session.KernelId, runId, reason);
                    if (lost is not null)
                        System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(lost);
                }
                if (!more)
                    yield break;
                // The OOM killer took the interpreter: the session ends oom-killed, and so does this run.
                if (events.Current is ResultEvent { Result: var result } &&
                    await EndIfKilledByOutOfMemoryAsync(session, result, cancellationToken).ConfigureAwait(false) is { } oomEnd)
                {
                    throw new SessionEndedDuringRunException(session.KernelId, runId, oomEnd);
                }
                // The session's limit stopped the run: the result goes out, then the session ends (in the finally).
                if (events.Current is ResultEvent { Result.Status: ExecutionStatus.ExecTimeout } && sessionLimitGoverns)
                    execTimedOut = DateTimeOffset.UtcNow;
                yield return events.Current;
            }
        }
        finally
        {
            session.EndRun();
            if (execTimedOut is { } at)
                await EndByTimeoutAsync(session, new SessionEndReason(SessionEndKind.ExecTimeout, at), _stop.Token).ConfigureAwait(false);
        }
    }

    private static async Task<SessionEndReason?> WaitForEndReasonAsync(Session session, CancellationToken cancellationToken)
    {
        var deadline = DateTimeOffset.UtcNow + EndReasonGrace;
        while (session.EndReason is null && DateTimeOffset.UtcNow < deadline)
            await Task.Delay(TimeSpan.FromMilliseconds(50), cancellationToken).ConfigureAwait(false);
        // containerd's OOM event may come just after the exit (gVisor: the OOM killer takes the sandbox): a SIGKILL end
        // waits a moment for it to become oom-killed.
        var refineUntil = DateTimeOffset.UtcNow + OutOfMemoryRefineGrace;
        while (session.EndReason is { Kind: SessionEndKind.Signaled or SessionEndKind.SandboxDied, Signal: 9 } && DateTimeOffset.UtcNow < refineUntil)
            await Task.Delay(TimeSpan.FromMilliseconds(50), cancellationToken).ConfigureAwait(false);
        return session.EndReason;
    }
}
