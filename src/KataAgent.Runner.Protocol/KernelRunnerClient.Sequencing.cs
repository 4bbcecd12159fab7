using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using NetMQ;

namespace KataAgent.Runner.Protocol;

/// <summary>One run (protocol step) the runner knows, from `runs`.</summary>
public sealed record RunnerRunInfo(long Run, string Type, string? Label, string State, long? FirstSeq, long? LastSeq, int? ExitCode)
{
    public bool Ended => State == "ended";
}

/// <summary>The runner's `runs-result`: the next sequence number, the oldest still replayable, the last runs.</summary>
public sealed record RunnerRuns(long NextSeq, long OldestSeq, IReadOnlyList<RunnerRunInfo> Runs)
{
    internal static RunnerRuns Parse(byte[] payload)
    {
        using JsonDocument document = JsonDocument.Parse(payload);
        JsonElement root = document.RootElement;
        var runs = new List<RunnerRunInfo>();
        if (root.TryGetProperty("runs", out JsonElement list) && list.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement run in list.EnumerateArray())
            {
                runs.Add(new RunnerRunInfo(
                    run.GetProperty("run").GetInt64(),
                    run.GetProperty("type").GetString() ?? "",
                    run.TryGetProperty("label", out JsonElement label) ? label.GetString() : null,
                    run.GetProperty("state").GetString() ?? "",
                    run.TryGetProperty("firstSeq", out JsonElement first) ? first.GetInt64() : null,
                    run.TryGetProperty("lastSeq", out JsonElement last) ? last.GetInt64() : null,
                    run.TryGetProperty("exitCode", out JsonElement exitCode) ? exitCode.GetInt32() : null));
            }
        }
        return new RunnerRuns(root.GetProperty("nextSeq").GetInt64(), root.GetProperty("oldestSeq").GetInt64(), runs);
    }
}

/// <summary>A run <see cref="KernelRunnerClient.ResumeAsync"/> made the active one: collect it with mode continue under <see cref="RunId"/>.</summary>
public sealed record AdoptedRun(string RunId, ExecutionMode Mode, bool Ended, long? FirstSeq);

/// <summary>
/// Sequenced output (<see cref="KernelRunnerClientOptions.SequencedOutput"/>): messages are taken in sequence order
/// exactly once; a gap (a message lost on the way, e.g. routed by the runner's PUSH socket to a peer that never
/// finished its CURVE handshake) or silence during a run asks the runner to resend from the last number held.
/// </summary>
public sealed partial class KernelRunnerClient
{
    private readonly NetMQTimer _silenceTimer = new(TimeSpan.FromMilliseconds(250));
    // Under _gate. Null: nothing taken since (re)connecting, so the next message sets the base.
    private long? _lastSeq;
    private long _lastSequencedAt = Stopwatch.GetTimestamp();
    private long _replayAskedFrom;
    private long _replayAskedAt;
    private long _replayRequests;
    private long _duplicatesDropped;
    private long _lostMessages;

    // What the runner's own status said: an older runner binary ignores the runner.json switch and never answers `runs`.
    // 0: not known yet (asked per connection), 1: it numbers its output, 2: it does not.
    private int _runnerSequences;

    /// <summary>
    /// The runner sequences its output: asked for (<see cref="KernelRunnerClientOptions.SequencedOutput"/>) and not
    /// denied by the runner's status (read before the first run of a connection).
    /// </summary>
    public bool IsSequenced => _options.SequencedOutput && Volatile.Read(ref _runnerSequences) != 2;

    private void NoteRunnerSequencing(IReadOnlyDictionary<string, object?> status)
    {
        if (_options.SequencedOutput)
        {
            Volatile.Write(ref _runnerSequences, status.TryGetValue("sequenced-output", out object? value) && value is true ? 1 : 2);
        }
    }

    /// <summary>Whether the runner numbers its output, from its status (one round trip per connection, often already made by a readiness probe).</summary>
    private async Task<bool> RunnerSequencesAsync(CancellationToken cancellationToken)
    {
        if (!_options.SequencedOutput)
        {
            return false;
        }
        if (Volatile.Read(ref _runnerSequences) == 0)
        {
            await GetStatusAsync(cancellationToken).ConfigureAwait(false);
        }
        return Volatile.Read(ref _runnerSequences) == 1;
    }

    /// <summary>Replays asked of the runner (gap or silence).</summary>
    public long ReplayRequests => Interlocked.Read(ref _replayRequests);

    /// <summary>Sequenced messages dropped because they had been taken already (replays overlap live output).</summary>
    public long DuplicatesDropped => Interlocked.Read(ref _duplicatesDropped);

    /// <summary>Sequenced messages the runner could no longer replay (evicted from its buffer); each loss is noted in the run's stderr.</summary>
    public long LostMessages => Interlocked.Read(ref _lostMessages);

    /// <summary>The last sequence number taken, or null.</summary>
    public long? LastSeq
    {
        get
        {
            lock (_gate)
            {
                return _lastSeq;
            }
        }
    }

    /// <summary>`runs`: the runs the runner knows (the last 64) and its sequence range. Sequenced mode only.</summary>
    public async Task<RunnerRuns> ListRunnerRunsAsync(CancellationToken cancellationToken = default)
    {
        if (!await RunnerSequencesAsync(cancellationToken).ConfigureAwait(false))
        {
            throw new InvalidOperationException(_options.SequencedOutput
                ? "the runner does not number its output (an older kata-runner): its runs cannot be listed or replayed"
                : "the runner's runs are known only in sequenced mode (KernelRunnerClientOptions.SequencedOutput)");
        }
        // A reply can be lost like output (a half-connected peer on the runner's PUSH socket): ask again, briefly.
        TimeSpan attempt = _options.ReplyTimeout < TimeSpan.FromSeconds(2) ? _options.ReplyTimeout : TimeSpan.FromSeconds(2);
        TimeSpan total = _options.ReplyTimeout > TimeSpan.FromSeconds(10) ? _options.ReplyTimeout : TimeSpan.FromSeconds(10);
        long deadline = Stopwatch.GetTimestamp() + (long)(total.TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            try
            {
                return RunnerRuns.Parse(await RequestAsync(RunnerMessageTypes.Runs, [], RunnerMessageTypes.RunsResult, attempt, cancellationToken)
                    .ConfigureAwait(false));
            }
            catch (TimeoutException) when (Stopwatch.GetTimestamp() < deadline)
            {
                // once more
            }
        }
    }

    /// <summary>
    /// After this client connected to a runner another client (an agent before its restart) used: makes the runner's
    /// latest run (a query, or a batch from its clean step) this client's active run and asks for its output from its
    /// first message, so that collecting it (mode continue, <see cref="AdoptedRun.RunId"/>) gives the whole run, in
    /// order, as far as the runner's replay buffer holds it (a loss is noted in the output). Returns null when the
    /// runner has no such run, or it ended and <paramref name="includeEnded"/> is false.
    /// </summary>
    public async Task<AdoptedRun?> ResumeAsync(bool includeEnded = true, CancellationToken cancellationToken = default)
    {
        RunnerRuns runs = await ListRunnerRunsAsync(cancellationToken).ConfigureAwait(false);
        int start = -1;
        for (int index = runs.Runs.Count - 1; index >= 0; index--)
        {
            if (runs.Runs[index].Type is RunnerMessageTypes.Code or RunnerMessageTypes.Clean)
            {
                start = index;
                break;
            }
        }
        AdoptedRun? adopted = null;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (start >= 0)
            {
                RunnerRunInfo first = runs.Runs[start];
                ExecutionMode mode = first.Type == RunnerMessageTypes.Code ? ExecutionMode.Query : ExecutionMode.Batch;
                List<RunnerRunInfo> steps = [.. runs.Runs.Skip(start).Take(mode == ExecutionMode.Query ? 1 : 3)];
                bool ended = steps.Count == (mode == ExecutionMode.Query ? 1 : 3) && steps.All(step => step.Ended);
                if (!ended || includeEnded)
                {
                    if (_run is not null)
                    {
                        throw new RunInProgressException($"cannot adopt the runner's run {first.Run}: run '{_run.RunId}' is active in this client");
                    }
                    string runId = first.Label ?? "runner-" + first.Run.ToString(CultureInfo.InvariantCulture);
                    ActiveRun run = StartRunLocked(runId, mode, new ExecutionOptions());
                    run.Collecting = false;
                    adopted = new AdoptedRun(runId, mode, ended, first.FirstSeq);
                    // Everything from the run's first message is wanted again; a run not started yet has none.
                    _lastSeq = (first.FirstSeq ?? runs.NextSeq) - 1;
                    _lastSequencedAt = Stopwatch.GetTimestamp();
                    if (first.FirstSeq is long from)
                    {
                        RequestReplayLocked(from);
                    }
                }
            }
            _lastSeq ??= runs.NextSeq - 1;
        }
        return adopted;
    }

    /// <summary>Before a run starts: learn where the sequence stands (once per connection) and label the run with its id.</summary>
    private async Task PrepareSequencedRunAsync(string runId, CancellationToken cancellationToken)
    {
        bool known;
        lock (_gate)
        {
            known = _lastSeq is not null;
        }
        if (!known)
        {
            if (!await RunnerSequencesAsync(cancellationToken).ConfigureAwait(false))
            {
                return; // plain two-frame output, as before sequencing existed
            }
            RunnerRuns runs = await ListRunnerRunsAsync(cancellationToken).ConfigureAwait(false);
            lock (_gate)
            {
                _lastSeq ??= runs.NextSeq - 1;
                _lastSequencedAt = Stopwatch.GetTimestamp();
            }
        }
        await SendAsync(RunnerMessageTypes.RunLabel, Encoding.UTF8.GetBytes(runId), cancellationToken).ConfigureAwait(false);
    }

    private void ForgetSequenceLocked()
    {
        _lastSeq = null;
        // A new connection may be a new runner process (a restart): ask it again.
        Volatile.Write(ref _runnerSequences, 0);
        _replayAskedFrom = 0;
    }

    /// <summary>Poller thread: true when the message is the next in sequence (or sets the base); duplicates and gaps are not dispatched.</summary>
    private bool AcceptSequence(RunnerMessage message)
    {
        long seq = message.Seq!.Value;
        lock (_gate)
        {
            // Silence means nothing arrives at all: a long replay of duplicates must not look like silence and ask
            // for the same messages yet again.
            _lastSequencedAt = Stopwatch.GetTimestamp();
            if (_lastSeq is not long last || seq == last + 1)
            {
                _lastSeq = seq;
                return true;
            }
            if (seq <= last)
            {
                Interlocked.Increment(ref _duplicatesDropped);
                return false;
            }
            // Something between was lost: it and everything after it comes again, in order.
            RequestReplayLocked(last + 1);
            return false;
        }
    }

    /// <summary>`replay-gap` {from, to}: those messages are gone for good; say so in the run's output and go on after them.</summary>
    private void AcceptReplayGap(RunnerMessage message)
    {
        long from, to;
        try
        {
            using JsonDocument document = JsonDocument.Parse(message.Payload);
            from = document.RootElement.GetProperty("from").GetInt64();
            to = document.RootElement.GetProperty("to").GetInt64();
        }
        catch (Exception exception) when (exception is JsonException or InvalidOperationException or KeyNotFoundException or FormatException)
        {
            Interlocked.Increment(ref _ignoredMessages);
            return;
        }
        ActiveRun? run = null;
        lock (_gate)
        {
            if (_lastSeq is not long last || from > last + 1 || to <= last)
            {
                return;
            }
            Interlocked.Add(ref _lostMessages, to - last);
            _lastSeq = to;
            _lastSequencedAt = Stopwatch.GetTimestamp();
            if (_boundariesToSkip == 0 && _run is { } active)
            {
                run = active;
                run.Buffer.AppendOutput(RunnerMessageTypes.Stderr, _stderrDecoder.Flush());
                run.Buffer.AppendOutput(RunnerMessageTypes.Stderr,
                    $"\n[kata-agent: {to - last} output message(s) lost: the runner's replay buffer no longer holds seq {last + 1}..{to}]\n");
            }
        }
        run?.Signal.Set();
    }

    /// <summary>Timer on the poller thread: a run that should be producing or ending but is silent may have lost its messages.</summary>
    private void ReplayAfterSilence()
    {
        lock (_gate)
        {
            bool waiting = _boundariesToSkip > 0 || (_run is { } run && run.SeenBoundaries < run.ExpectedBoundaries);
            if (waiting && _lastSeq is long last && Stopwatch.GetElapsedTime(_lastSequencedAt) >= _options.ReplayAfterSilence)
            {
                RequestReplayLocked(last + 1);
            }
        }
    }

    private void RequestReplayLocked(long from)
    {
        // One request per position and silence period: the live messages that follow a gap all point at the same hole.
        if (from == _replayAskedFrom && Stopwatch.GetElapsedTime(_replayAskedAt) < _options.ReplayAfterSilence)
        {
            return;
        }
        _replayAskedFrom = from;
        _replayAskedAt = Stopwatch.GetTimestamp();
        Interlocked.Increment(ref _replayRequests);
        _ = Enqueue(RunnerMessageTypes.Replay, Encoding.ASCII.GetBytes($"{{\"from\":{from.ToString(CultureInfo.InvariantCulture)}}}"));
    }
}
