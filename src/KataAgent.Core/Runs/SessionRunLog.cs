using System.Runtime.CompilerServices;
using KataAgent.Runner.Protocol;

namespace KataAgent.Core.Runs;

/// <summary>One event of a run as the agent keeps it: its sequence number within the run (from 0), and the event.</summary>
public sealed record RunLogEntry(long Seq, ExecutionEvent Event);

/// <summary>What the agent knows of one run of a session (docs/DURABLE-RUNS.md).</summary>
public sealed record RunSummary(string RunId, string State, long FirstKeptSeq, long NextSeq, DateTimeOffset StartedAt, DateTimeOffset? EndedAt,
    ExecutionResult? Result)
{
    public const string Running = "running";
    public const string WaitingInput = "waiting-input";
    public const string Ended = "ended";
}

/// <summary>A run id the session's log does not know (never started here, or dropped as one of the oldest).</summary>
public sealed class RunNotFoundException(string message) : Exception(message);

/// <summary>
/// The runs of one session: every output event and the end of each run, numbered per run from 0, so that a client
/// can attach from any number it holds and follow the run live. Bounded: output beyond <c>maxBytes</c> (about, for
/// all runs of the session) is dropped oldest first (an attach from there is told so), and only the last
/// <c>keptRuns</c> runs are kept; a run's final result outlives the eviction of its output. Thread-safe.
/// </summary>
public sealed class SessionRunLog(long maxBytes, int keptRuns)
{
    private readonly Lock _gate = new();
    private readonly List<LoggedRun> _runs = [];
    private long _bytes;

    /// <summary>A run starts (or is adopted from the runner): listed at once, output follows. Starting a known id again starts it afresh.</summary>
    public void Begin(string runId)
    {
        lock (_gate)
        {
            if (Find(runId) is { } old)
            {
                if (!old.Ended)
                {
                    return;
                }
                Remove(old);
            }
            _runs.Add(new LoggedRun(runId));
            TrimRuns();
        }
    }

    /// <summary>
    /// Adds what the runner client handed out for the run. Output is kept; of the results, those that matter to a
    /// follower are kept (waiting for input, the end); a `continued` marks nothing.
    /// </summary>
    public void Append(string runId, ExecutionEvent executionEvent)
    {
        LoggedRun? changed;
        lock (_gate)
        {
            changed = Find(runId);
            if (changed is null || changed.Ended)
            {
                return;
            }
            switch (executionEvent)
            {
                case OutputEvent output:
                    long size = 64 + (2L * output.Item.Data.Length);
                    changed.Entries.AddLast(new RunLogEntry(changed.NextSeq++, output));
                    changed.Bytes += size;
                    _bytes += size;
                    Evict();
                    break;
                case ResultEvent { Result: var result } when result.RunEnded:
                    changed.Entries.AddLast(new RunLogEntry(changed.NextSeq++, executionEvent));
                    changed.Result = result;
                    changed.EndedAt = DateTimeOffset.UtcNow;
                    TrimRuns();
                    break;
                case ResultEvent { Result.Status: ExecutionStatus.WaitingInput }:
                    changed.Entries.AddLast(new RunLogEntry(changed.NextSeq++, executionEvent));
                    changed.WaitingInput = true;
                    break;
                case ResultEvent:
                    return;
            }
            if (executionEvent is OutputEvent)
            {
                changed.WaitingInput = false;
            }
        }
        changed.Signal();
    }

    /// <summary>Ends a run that can no longer end by itself (its collector failed), with the reason on stderr.</summary>
    public void Abort(string runId, string reason)
    {
        Append(runId, new OutputEvent(new ConsoleItem(RunnerMessageTypes.Stderr, $"\n[kata-agent: {reason}]\n")));
        Append(runId, new ResultEvent(new ExecutionResult { RunId = runId, Status = ExecutionStatus.Finished, Console = [] }));
    }

    /// <summary>The one collector of a run that nobody else collects (see Agent.Runs.cs); false when it has one already.</summary>
    public bool TryClaimCollector(string runId)
    {
        lock (_gate)
        {
            if (Find(runId) is not { Ended: false, Collected: false } run)
            {
                return false;
            }
            run.Collected = true;
            return true;
        }
    }

    public void ReleaseCollector(string runId)
    {
        lock (_gate)
        {
            if (Find(runId) is { } run)
            {
                run.Collected = false;
            }
        }
    }

    public bool IsEnded(string runId)
    {
        lock (_gate)
        {
            return Find(runId)?.Ended ?? true;
        }
    }

    public IReadOnlyList<RunSummary> List()
    {
        lock (_gate)
        {
            return [.. _runs.Select(Summarize)];
        }
    }

    /// <summary>The run an attach without a run id means: the last one still going, else the last one.</summary>
    public string? DefaultRunId()
    {
        lock (_gate)
        {
            return (_runs.LastOrDefault(run => !run.Ended) ?? _runs.LastOrDefault())?.RunId;
        }
    }

    /// <summary>
    /// Everything from <paramref name="fromSeq"/> on, then live until the run ends. Output no longer kept comes as one
    /// stderr note in its place (numbered as its first lost event). <paramref name="onWait"/> runs at least every second
    /// while waiting (the caller keeps the session from going idle with it).
    /// </summary>
    public async IAsyncEnumerable<RunLogEntry> FollowAsync(string runId, long fromSeq, Action? onWait = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        long next = Math.Max(0, fromSeq);
        while (true)
        {
            List<RunLogEntry> batch;
            Task changed;
            bool ended;
            lock (_gate)
            {
                LoggedRun run = Find(runId) ?? throw new RunNotFoundException($"no run '{runId}' in this session (it never ran here, or it was one of the oldest and was dropped)");
                changed = run.Changed;
                ended = run.Ended;
                batch = [.. run.Entries.Where(entry => entry.Seq >= next)];
                if (next < run.NextSeq && (batch.Count == 0 || batch[0].Seq > next))
                {
                    long firstKept = batch.Count > 0 ? batch[0].Seq : run.NextSeq;
                    batch.Insert(0, new RunLogEntry(next, new OutputEvent(new ConsoleItem(RunnerMessageTypes.Stderr,
                        $"[kata-agent: output {next}..{firstKept - 1} of run '{runId}' is no longer kept (the session's run log is bounded)]\n"))));
                }
            }
            foreach (RunLogEntry entry in batch)
            {
                yield return entry;
            }
            if (batch.Count > 0)
            {
                next = batch[^1].Seq + 1;
                continue;
            }
            if (ended)
            {
                yield break;
            }
            onWait?.Invoke();
            try
            {
                await changed.WaitAsync(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // look again (and keep the session busy)
            }
        }
    }

    private LoggedRun? Find(string runId) => _runs.FindLast(run => run.RunId == runId);

    private void Remove(LoggedRun run)
    {
        _bytes -= run.Bytes;
        _runs.Remove(run);
    }

    private void TrimRuns()
    {
        while (_runs.Count > keptRuns && _runs.FirstOrDefault(run => run.Ended) is { } oldest)
        {
            Remove(oldest);
        }
    }

    private void Evict()
    {
        foreach (LoggedRun run in _runs)
        {
            LinkedListNode<RunLogEntry>? node = run.Entries.First;
            while (_bytes > maxBytes && node is not null)
            {
                LinkedListNode<RunLogEntry>? next = node.Next;
                if (node.Value.Event is OutputEvent { Item: var item } && node != run.Entries.Last)
                {
                    long size = 64 + (2L * item.Data.Length);
                    run.Bytes -= size;
                    _bytes -= size;
                    run.Entries.Remove(node);
                }
                node = next;
            }
            if (_bytes <= maxBytes)
            {
                return;
            }
        }
    }

    private static RunSummary Summarize(LoggedRun run) => new(run.RunId,
        run.Ended ? RunSummary.Ended : run.WaitingInput ? RunSummary.WaitingInput : RunSummary.Running,
        run.Entries.First?.Value.Seq ?? run.NextSeq, run.NextSeq, run.StartedAt, run.EndedAt, run.Result);

    private sealed class LoggedRun(string runId)
    {
        private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string RunId { get; } = runId;
        public DateTimeOffset StartedAt { get; } = DateTimeOffset.UtcNow;
        public LinkedList<RunLogEntry> Entries { get; } = new();
        public long NextSeq { get; set; }
        public long Bytes { get; set; }
        public ExecutionResult? Result { get; set; }
        public DateTimeOffset? EndedAt { get; set; }
        public bool WaitingInput { get; set; }
        public bool Collected { get; set; }
        public bool Ended => Result is not null;
        public Task Changed => Volatile.Read(ref _changed).Task;

        public void Signal() => Interlocked.Exchange(ref _changed, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }
}
