using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using NetMQ;
using NetMQ.Monitoring;
using NetMQ.Sockets;

namespace KataAgent.Runner.Protocol;

/// <summary>
/// The agent's side of the kernel-runner protocol for one session.
/// <para>
/// Threading: the sockets live on one NetMQ poller thread; callers never block on it (requests are
/// queued to the poller, answers come back through tasks). ZeroMQ reconnects by itself when the runner
/// restarts; a run in progress when the connection drops ends as <c>finished</c> with no exit code and
/// a note on stderr, and pending requests fail with <see cref="RunnerUnavailableException"/>.
/// </para>
/// <para>
/// One run at a time, the others queued (as Backend.AI's agent does): starting a query or batch run while
/// another is active waits until that one is over, and queued runs start in the order they were
/// requested. A run stays active until its final <c>finished</c> has been collected, it hit its exec
/// timeout, or it was dropped as abandoned (see <see cref="KernelRunnerClientOptions.UncollectedEndGrace"/>).
/// At most <see cref="KernelRunnerClientOptions.MaxQueuedRuns"/> runs wait (<see cref="RunQueueFullException"/>).
/// </para>
/// </summary>
public sealed partial class KernelRunnerClient : IAsyncDisposable, IDisposable
{
    // Messages waiting between the socket's I/O thread and the poller: with MaxMessageSize this bounds
    // what a runner flooding faster than we decode can make the agent hold.
    private const int ReceiveHighWatermark = 8;

    // How often a queued run looks whether the active run is stuck without a collector (exec timeout, end never collected).
    private static readonly TimeSpan QueuePollInterval = TimeSpan.FromMilliseconds(500);

    private readonly KernelRunnerClientOptions _options;
    private readonly PushSocket _push = new();
    private readonly PullSocket _pull = new();
    private readonly NetMQQueue<OutgoingMessage> _outgoing = new();
    private readonly NetMQPoller _poller;
    private readonly NetMQMonitor _monitor;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Queue<TaskCompletionSource<byte[]>>> _pendingReplies = new(StringComparer.Ordinal);
    private readonly IncrementalUtf8Decoder _stdoutDecoder = new();
    private readonly IncrementalUtf8Decoder _stderrDecoder = new();
    // Invariant: while runs are queued, _run is not null (freeing the slot promotes the first queued run at once).
    private ActiveRun? _run;
    private readonly LinkedList<QueuedRun> _queuedRuns = new();
    // End messages still due from runs abandoned at their exec timeout; output before them is theirs.
    private int _boundariesToSkip;
    private long _ignoredMessages;
    private volatile bool _connected;
    private bool _disposed;

    public KernelRunnerClient(KernelRunnerClientOptions options)
    {
        if (options.MaxMessageSize < 64 * 1024)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxMessageSize,
                "the kernel runner's maximum message size must be at least 64 KiB (runner replies can be that long)");
        }
        _options = options;
        NetMQCertificate? certificate = options.Curve?.AgentCertificate();
        foreach (NetMQSocket socket in new NetMQSocket[] { _push, _pull })
        {
            socket.Options.Linger = TimeSpan.Zero;
            socket.Options.ReconnectInterval = options.ReconnectInterval;
            socket.Options.ReconnectIntervalMax = options.ReconnectIntervalMax;
            if (options.Curve is { } curve)
            {
                // A runner without the matching secret key cannot finish the handshake: nothing is
                // sent to or taken from it, and requests time out (see RequestAsync).
                socket.Options.CurveServerCertificate = NetMQCertificate.FromPublicKey(curve.RunnerPublicKey);
                socket.Options.CurveCertificate = certificate!;
            }
        }
        _pull.Options.MaxMsgSize = options.MaxMessageSize;
        _pull.Options.ReceiveHighWatermark = ReceiveHighWatermark;
        _monitor = new NetMQMonitor(_pull, $"inproc://kernel-runner-monitor-{Guid.NewGuid():N}",
            SocketEvents.Connected | SocketEvents.Disconnected);
        // Every handler runs on the poller thread, where an escaping exception would end the process.
        _monitor.Connected += (_, _) => _connected = true;
        _monitor.Disconnected += (_, _) => Guarded("handling a disconnect", OnDisconnected);
        _pull.ReceiveReady += (_, _) => Guarded("reading the runner's messages", ReceiveAvailable);
        _outgoing.ReceiveReady += (_, _) => Guarded("sending to the runner", SendQueued);
        _poller = [_pull, _outgoing];
        if (options.SequencedOutput)
        {
            _silenceTimer.Elapsed += (_, _) => Guarded("checking for lost output", ReplayAfterSilence);
            _poller.Add(_silenceTimer);
        }
        _monitor.AttachToPoller(_poller);
        _pull.Connect($"tcp://{options.Host}:{options.OutputPort}");
        _push.Connect($"tcp://{options.Host}:{options.InputPort}");
        _poller.RunAsync("kernel-runner-client", isBackgroundThread: true);
    }

    /// <summary>True while the connection to the runner's output port is up.</summary>
    public bool IsConnected => _connected;

    /// <summary>The active run's id, or null.</summary>
    public string? ActiveRunId
    {
        get
        {
            lock (_gate)
            {
                return _run?.RunId;
            }
        }
    }

    /// <summary>The ids of the runs waiting for their turn, first to start first.</summary>
    public IReadOnlyList<string> QueuedRunIds
    {
        get
        {
            lock (_gate)
            {
                return _queuedRuns.Select(queued => queued.RunId).ToList();
            }
        }
    }

    /// <summary>True when the active run's output up to its next end message has arrived (for tests).</summary>
    internal bool ActiveRunHasPendingEnd
    {
        get
        {
            lock (_gate)
            {
                return _run?.Buffer.HasBoundary ?? false;
            }
        }
    }

    /// <summary>
    /// Raised (on the poller thread) when something went wrong that ended a run or broke the channel:
    /// the connection dropped during a run (the runner stopped, or sent a message over
    /// <see cref="KernelRunnerClientOptions.MaxMessageSize"/>), or a message could not be handled.
    /// The argument says what happened. Handlers must not throw.
    /// </summary>
    public event Action<string>? Faulted;

    /// <summary>
    /// Messages dropped as garbage (wrong frame count, bad type) or as output while no run was active (e.g. the
    /// log lines Backend.AI's runner writes to stderr between runs).
    /// </summary>
    public long IgnoredMessages => Interlocked.Read(ref _ignoredMessages);

    /// <summary>
    /// Starts (query, batch), answers (input) or continues a run, and collects its output until the run
    /// reaches an end message (finished, clean-finished, build-finished, waiting-input), the flush timeout
    /// passes (continued, with or without output) or the exec timeout passes (exec-timeout).
    /// A query or batch run started while another is active waits for its turn first (the flush timeout
    /// counts from when it started).
    /// Cancelling stops collecting only: the run goes on and its output is kept for the next call
    /// (cancelling while queued takes the run out of the queue; it never starts).
    /// </summary>
    public async Task<ExecutionResult> ExecuteAsync(string runId, ExecutionMode mode, string text,
        ExecutionOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new ExecutionOptions();
        ActiveRun run = await BeginAsync(runId, mode, text, options, cancellationToken).ConfigureAwait(false);
        try
        {
            return await CollectAsync(run, options.FlushTimeout, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            run.Collecting = false;
        }
    }

    /// <summary>
    /// Like <see cref="ExecuteAsync"/>, but yields output as it arrives; the last element is a
    /// <see cref="ResultEvent"/>. It runs to the next end message or the exec timeout, or, with
    /// <see cref="ExecutionOptions.StreamingFlushTimeout"/>, ends as `continued` when that passes first.
    /// </summary>
    public async IAsyncEnumerable<ExecutionEvent> ExecuteStreamingAsync(string runId, ExecutionMode mode, string text,
        ExecutionOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        options ??= new ExecutionOptions();
        ActiveRun run = await BeginAsync(runId, mode, text, options, cancellationToken).ConfigureAwait(false);
        var unyielded = new Queue<ConsoleItem>();
        long? flushDeadline = options.StreamingFlushTimeout is TimeSpan flush ? Deadline(flush) : null;
        try
        {
            while (true)
            {
                RunBoundary? boundary;
                long dropped;
                lock (_gate)
                {
                    (List<ConsoleItem> items, boundary, dropped) = run.Buffer.Drain();
                    foreach (ConsoleItem item in items)
                    {
                        unyielded.Enqueue(item);
                    }
                }
                run.DroppedCharacters += dropped;
                while (unyielded.Count > 0)
                {
                    yield return new OutputEvent(unyielded.Dequeue());
                }
                if (boundary is not null)
                {
                    yield return new ResultEvent(EndSegment(run, boundary, []));
                    yield break;
                }
                if (run.ExecDeadlinePassed)
                {
                    yield return new ResultEvent(await AbandonAtExecTimeoutAsync(run, []).ConfigureAwait(false));
                    yield break;
                }
                TimeSpan? untilFlush = TimeUntil(flushDeadline);
                if (untilFlush <= TimeSpan.Zero)
                {
                    yield return new ResultEvent(Result(run, ExecutionStatus.Continued, null, [], null));
                    yield break;
                }
                await run.Signal.WaitAsync(Earlier(run.TimeUntilExecDeadline, untilFlush), cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            if (unyielded.Count > 0)
            {
                lock (_gate)
                {
                    run.Buffer.Unread([.. unyielded]);
                }
            }
            run.Collecting = false;
        }
    }

    /// <summary>Sends `interrupt`: SIGINT to the running code; a query run then finishes with a traceback.</summary>
    public Task InterruptAsync(CancellationToken cancellationToken = default) =>
        SendAsync(RunnerMessageTypes.Interrupt, [], cancellationToken);

    public async Task<IReadOnlyList<string>> CompleteAsync(CompletionRequest request, CancellationToken cancellationToken = default)
    {
        byte[] answer = await RequestAsync(RunnerMessageTypes.Complete, JsonSerializer.SerializeToUtf8Bytes(request),
            RunnerMessageTypes.Completion, _options.ReplyTimeout, cancellationToken).ConfigureAwait(false);
        using JsonDocument document = JsonDocument.Parse(answer);
        return document.RootElement.TryGetProperty("suggestions", out JsonElement suggestions) && suggestions.ValueKind == JsonValueKind.Array
            ? suggestions.EnumerateArray().Select(suggestion => suggestion.ToString()).ToList()
            : [];
    }

    /// <summary>The runner's `status` map (msgpack, decoded). Answered promptly even while code runs.</summary>
    public async Task<IReadOnlyDictionary<string, object?>> GetStatusAsync(CancellationToken cancellationToken = default)
    {
        byte[] answer = await RequestAsync(RunnerMessageTypes.Status, [], RunnerMessageTypes.Status, _options.ReplyTimeout, cancellationToken).ConfigureAwait(false);
        IReadOnlyDictionary<string, object?> status = MessagePackMapReader.Read(answer);
        NoteRunnerSequencing(status);
        return status;
    }

    /// <summary>Sends `start-service` (Backend.AI's shape, see <see cref="ServiceDefinition"/>) and returns the `service-result`.</summary>
    public async Task<ServiceResult> StartServiceAsync(ServiceDefinition service, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(service.Name, nameof(service));
        int startSeconds = service.StartTimeoutSeconds ?? 30;
        TimeSpan timeout = _options.ServiceStartTimeout > TimeSpan.FromSeconds(startSeconds + 10)
            ? _options.ServiceStartTimeout : TimeSpan.FromSeconds(startSeconds + 10);
        byte[] answer = await RequestAsync(RunnerMessageTypes.StartService, JsonSerializer.SerializeToUtf8Bytes(service),
            RunnerMessageTypes.ServiceResult, timeout, cancellationToken).ConfigureAwait(false);
        return JsonSerializer.Deserialize<ServiceResult>(answer) ?? new ServiceResult("failed", "empty answer from the runner");
    }

    /// <summary>Sends `shutdown-service` (the runner does not answer it; see <see cref="GetAppsAsync(string, CancellationToken)"/>).</summary>
    public Task ShutdownServiceAsync(string name, CancellationToken cancellationToken = default) =>
        SendAsync(RunnerMessageTypes.ShutdownService, JsonSerializer.SerializeToUtf8Bytes(name), cancellationToken);

    /// <summary>
    /// Sends `get-apps` with a service-name filter ("" = all) and returns the parsed `apps-result`: the service
    /// apps the image defines (not the running ones).
    /// </summary>
    public async Task<AppsResult> GetAppsAsync(string nameFilter, CancellationToken cancellationToken = default)
    {
        byte[] answer = await RequestAsync(RunnerMessageTypes.GetApps, Encoding.UTF8.GetBytes(nameFilter ?? ""), RunnerMessageTypes.AppsResult,
            _options.ReplyTimeout, cancellationToken).ConfigureAwait(false);
        return AppsResult.Parse(answer);
    }

    /// <summary>All apps: <see cref="GetAppsAsync(string, CancellationToken)"/> with no filter.</summary>
    public Task<AppsResult> GetAppsAsync(CancellationToken cancellationToken = default) => GetAppsAsync("", cancellationToken);

    /// <summary>
    /// Personalises a pool member's runner for its one tenant: <paramref name="environment"/> applies to every process it
    /// starts from now on; returns once the runner has run the bootstrap script. A runner that refuses (not a pool
    /// member, or already personalised) throws <see cref="InvalidOperationException"/> with its reason.
    /// </summary>
    public async Task PersonaliseAsync(IReadOnlyDictionary<string, string> environment, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteStartObject("environ");
            foreach (var (name, value) in environment)
            {
                writer.WriteString(name, value);
            }
            writer.WriteEndObject();
            writer.WriteEndObject();
        }
        byte[] answer = await RequestAsync(RunnerMessageTypes.Personalise, buffer.ToArray(), RunnerMessageTypes.Personalised, timeout, cancellationToken)
            .ConfigureAwait(false);
        using var reply = JsonDocument.Parse(answer);
        if (!reply.RootElement.TryGetProperty("ok", out var ok) || ok.ValueKind != JsonValueKind.True)
        {
            throw new InvalidOperationException("the runner refused to be personalised: " +
                (reply.RootElement.TryGetProperty("error", out var error) ? error.GetString() : "no reason given"));
        }
    }

    public Task SendEventAsync(string type, JsonElement? data = null, CancellationToken cancellationToken = default)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("type", type);
            writer.WritePropertyName("data");
            if (data is JsonElement element)
            {
                element.WriteTo(writer);
            }
            else
            {
                writer.WriteNullValue();
            }
            writer.WriteEndObject();
        }
        return SendAsync(RunnerMessageTypes.Event, buffer.ToArray(), cancellationToken);
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            FailPendingReplies(new ObjectDisposedException(nameof(KernelRunnerClient)));
            foreach (QueuedRun queued in _queuedRuns)
            {
                queued.Started.TrySetException(new ObjectDisposedException(nameof(KernelRunnerClient)));
            }
            _queuedRuns.Clear();
        }
        EndAllCommands("the kernel runner client was disposed");
        _poller.Stop();
        _monitor.DetachFromPoller();
        _poller.Dispose();
        _monitor.Dispose();
        _push.Dispose();
        _pull.Dispose();
        _outgoing.Dispose();
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    private async Task<ActiveRun> BeginAsync(string runId, ExecutionMode mode, string text, ExecutionOptions options, CancellationToken cancellationToken)
    {
        ActiveRun? run = null;
        QueuedRun? queued = null;
        bool startsRun = mode is ExecutionMode.Query or ExecutionMode.Batch;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (startsRun)
            {
                if (_run?.RunId == runId || _queuedRuns.Any(waiting => waiting.RunId == runId))
                {
                    throw new RunInProgressException(
                        $"run '{runId}' is already {(_run?.RunId == runId ? "active" : "queued")} in this session; collect it with mode " +
                        "continue/input, or start the new run under another run id");
                }
                if (_run is null)
                {
                    run = StartRunLocked(runId, mode, options);
                }
                else
                {
                    if (_queuedRuns.Count >= _options.MaxQueuedRuns)
                    {
                        throw new RunQueueFullException(
                            $"cannot queue run '{runId}': {_queuedRuns.Count} runs already wait for run '{_run.RunId}' to end in this session " +
                            $"(at most {_options.MaxQueuedRuns} may wait); collect or interrupt the active run, or try again later");
                    }
                    queued = new QueuedRun(runId, mode, options);
                    _queuedRuns.AddLast(queued);
                }
            }
            else
            {
                if (_run is null || _run.RunId != runId)
                {
                    throw new NoActiveRunException(_run is null
                        ? $"no run is active, so run '{runId}' cannot take {mode.ToString().ToLowerInvariant()}"
                        : _queuedRuns.Any(waiting => waiting.RunId == runId)
                            ? $"run '{runId}' has not started yet (it waits for run '{_run.RunId}'), so it cannot take {mode.ToString().ToLowerInvariant()}"
                            : $"run '{runId}' is not the active run (that is '{_run.RunId}')");
                }
                run = _run;
                if (run.Collecting)
                {
                    throw new RunInProgressException($"run '{runId}' is already being collected by another call");
                }
                run.Collecting = true;
            }
        }
        if (queued is not null)
        {
            run = await WaitForTurnAsync(queued, cancellationToken).ConfigureAwait(false);
        }
        try
        {
            if (startsRun && _options.SequencedOutput)
            {
                await PrepareSequencedRunAsync(runId, cancellationToken).ConfigureAwait(false);
            }
            switch (mode)
            {
                case ExecutionMode.Query:
                    await SendAsync(RunnerMessageTypes.Code, Encoding.UTF8.GetBytes(text), cancellationToken).ConfigureAwait(false);
                    break;
                case ExecutionMode.Batch:
                    await SendAsync(RunnerMessageTypes.Clean, Encoding.UTF8.GetBytes(options.Clean), cancellationToken).ConfigureAwait(false);
                    await SendAsync(RunnerMessageTypes.Build, Encoding.UTF8.GetBytes(options.Build), cancellationToken).ConfigureAwait(false);
                    await SendAsync(RunnerMessageTypes.Exec, Encoding.UTF8.GetBytes(options.Exec), cancellationToken).ConfigureAwait(false);
                    break;
                case ExecutionMode.Input:
                    await SendAsync(RunnerMessageTypes.Input, Encoding.UTF8.GetBytes(text), cancellationToken).ConfigureAwait(false);
                    break;
                case ExecutionMode.Continue:
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown execution mode");
            }
        }
        catch
        {
            lock (_gate)
            {
                run!.Collecting = false;
                if (startsRun)
                {
                    ReleaseRunLocked(run);
                }
            }
            throw;
        }
        return run!;
    }

    /// <summary>Makes a new run the active one; the caller holds the gate and collects it.</summary>
    private ActiveRun StartRunLocked(string runId, ExecutionMode mode, ExecutionOptions options)
    {
        var run = new ActiveRun(runId, expectedBoundaries: mode == ExecutionMode.Batch ? 3 : 1,
            options.ExecTimeout, _options.MaxBufferedCharacters) { Collecting = true };
        _run = run;
        // A character split at the end of an earlier run must not leak into this one.
        _ = _stdoutDecoder.Flush();
        _ = _stderrDecoder.Flush();
        return run;
    }

    /// <summary>Ends <paramref name="run"/>'s turn (if it still has it) and starts the first queued run. Caller holds the gate.</summary>
    private void ReleaseRunLocked(ActiveRun run)
    {
        if (!ReferenceEquals(_run, run))
        {
            return;
        }
        _run = null;
        if (_queuedRuns.First is { } next)
        {
            _queuedRuns.RemoveFirst();
            QueuedRun queued = next.Value;
            queued.Run = StartRunLocked(queued.RunId, queued.Mode, queued.Options);
            queued.Started.TrySetResult();
        }
    }

    private async Task<ActiveRun> WaitForTurnAsync(QueuedRun queued, CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                try
                {
                    await queued.Started.Task.WaitAsync(QueuePollInterval, cancellationToken).ConfigureAwait(false);
                    return queued.Run!;
                }
                catch (TimeoutException)
                {
                    await ReclaimStuckRunAsync().ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException)
        {
            lock (_gate)
            {
                // Promoted just as the caller gave up: nothing was sent for it, so give the turn on.
                if (!_queuedRuns.Remove(queued) && queued.Run is { } promoted)
                {
                    promoted.Collecting = false;
                    ReleaseRunLocked(promoted);
                }
            }
            throw;
        }
    }

    /// <summary>
    /// Frees the turn of an active run nobody collects when it cannot end by itself any more: its exec timeout
    /// passed (it is interrupted, as a collector would have done), or its final end arrived longer than
    /// <see cref="KernelRunnerClientOptions.UncollectedEndGrace"/> ago.
    /// </summary>
    private async Task ReclaimStuckRunAsync()
    {
        OutgoingMessage? interrupt = null;
        lock (_gate)
        {
            if (_run is not { Collecting: false } run)
            {
                return;
            }
            bool ended = run.SeenBoundaries >= run.ExpectedBoundaries;
            if (!ended && run.ExecDeadlinePassed)
            {
                _boundariesToSkip += run.ExpectedBoundaries - run.SeenBoundaries;
                // Queued before the next run's first message, so that it cannot interrupt that one.
                interrupt = Enqueue(RunnerMessageTypes.Interrupt, []);
                ReleaseRunLocked(run);
            }
            else if (ended && run.FinalEndArrivedAt is long arrived && Stopwatch.GetElapsedTime(arrived) >= _options.UncollectedEndGrace)
            {
                ReleaseRunLocked(run);
            }
        }
        if (interrupt is not null)
        {
            try
            {
                await interrupt.Sent.Task.ConfigureAwait(false);
            }
            catch (RunnerUnavailableException)
            {
                // The runner is gone anyway.
            }
        }
    }

    private async Task<ExecutionResult> CollectAsync(ActiveRun run, TimeSpan flushTimeout, CancellationToken cancellationToken)
    {
        var console = new ConsoleBuilder();
        long? flushDeadline = Deadline(flushTimeout);
        try
        {
            while (true)
            {
                RunBoundary? boundary;
                lock (_gate)
                {
                    (List<ConsoleItem> items, boundary, long dropped) = run.Buffer.Drain();
                    console.AddRange(items);
                    run.DroppedCharacters += dropped;
                }
                if (boundary is not null)
                {
                    return EndSegment(run, boundary, console.Build());
                }
                if (run.ExecDeadlinePassed)
                {
                    return await AbandonAtExecTimeoutAsync(run, console.Build()).ConfigureAwait(false);
                }
                TimeSpan? untilFlush = TimeUntil(flushDeadline);
                // Continued even with no output (as Backend.AI's agent): the caller learns the run is alive.
                // A full console is handed out early: what one call holds is bounded like the buffer.
                if (untilFlush <= TimeSpan.Zero || (console.Count > 0 && console.Characters >= _options.MaxBufferedCharacters))
                {
                    return Result(run, ExecutionStatus.Continued, null, console.Build(), null);
                }
                await run.Signal.WaitAsync(Earlier(run.TimeUntilExecDeadline, untilFlush), cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // The caller gave up collecting, not the run: keep what was drained for the next call.
            lock (_gate)
            {
                run.Buffer.Unread(console.Build());
            }
            throw;
        }
    }

    /// <summary>A deadline <paramref name="timeout"/> from now; null for an infinite (or absurdly long) one.</summary>
    private static long? Deadline(TimeSpan timeout) =>
        timeout == Timeout.InfiniteTimeSpan || timeout > TimeSpan.FromDays(365) ? null
            : Stopwatch.GetTimestamp() + (long)(Math.Max(0, timeout.TotalSeconds) * Stopwatch.Frequency);

    private static TimeSpan? TimeUntil(long? deadline) =>
        deadline is long at ? Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), at) : null;

    private static TimeSpan? Earlier(TimeSpan? a, TimeSpan? b) => a is null ? b : b is null ? a : a < b ? a : b;

    private ExecutionResult EndSegment(ActiveRun run, RunBoundary boundary, List<ConsoleItem> console)
    {
        if (boundary.Status == ExecutionStatus.Finished)
        {
            lock (_gate)
            {
                run.Collecting = false;
                ReleaseRunLocked(run);
            }
        }
        return Result(run, boundary.Status, boundary.ExitCode, console, boundary.Options);
    }

    private async Task<ExecutionResult> AbandonAtExecTimeoutAsync(ActiveRun run, List<ConsoleItem> console)
    {
        OutgoingMessage interrupt;
        lock (_gate)
        {
            // Queued before the next run's first message, so that it cannot interrupt that one.
            interrupt = Enqueue(RunnerMessageTypes.Interrupt, []);
            if (ReferenceEquals(_run, run))
            {
                _boundariesToSkip += run.ExpectedBoundaries - run.SeenBoundaries;
                run.Collecting = false;
                ReleaseRunLocked(run);
            }
        }
        try
        {
            await interrupt.Sent.Task.ConfigureAwait(false);
        }
        catch (RunnerUnavailableException)
        {
            // The runner is gone anyway.
        }
        return Result(run, ExecutionStatus.ExecTimeout, null, console, null);
    }

    private static ExecutionResult Result(ActiveRun run, string status, int? exitCode, List<ConsoleItem> console, JsonElement? options)
    {
        long dropped = run.DroppedCharacters;
        run.DroppedCharacters = 0;
        return new ExecutionResult
        {
            RunId = run.RunId,
            Status = status,
            ExitCode = exitCode,
            Console = console,
            Options = options,
            DroppedCharacters = dropped,
        };
    }

    private async Task<byte[]> RequestAsync(string type, byte[] payload, string replyType, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var reply = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_pendingReplies.TryGetValue(replyType, out Queue<TaskCompletionSource<byte[]>>? waiting))
            {
                _pendingReplies[replyType] = waiting = new Queue<TaskCompletionSource<byte[]>>();
            }
            waiting.Enqueue(reply);
        }
        try
        {
            await SendAsync(type, payload, cancellationToken).ConfigureAwait(false);
            return await reply.Task.WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"the kernel runner did not answer '{type}' within {timeout.TotalSeconds:0.#} s" + (_options.Curve is null ? ""
                : " (with CURVE, also when the runner does not hold this session's key: the handshake then never completes)"));
        }
        finally
        {
            if (!reply.Task.IsCompleted)
            {
                lock (_gate)
                {
                    if (_pendingReplies.TryGetValue(replyType, out Queue<TaskCompletionSource<byte[]>>? waiting))
                    {
                        _pendingReplies[replyType] = new Queue<TaskCompletionSource<byte[]>>(waiting.Where(pending => pending != reply));
                    }
                }
            }
        }
    }

    private Task SendAsync(string type, byte[] payload, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        // The poller thread completes it; a caller that gives up must not wait on it regardless.
        return Enqueue(type, payload).Sent.Task.WaitAsync(cancellationToken);
    }

    /// <summary>Queues a message for the poller thread (never blocks: safe under the gate).</summary>
    private OutgoingMessage Enqueue(string type, byte[] payload)
    {
        var message = new OutgoingMessage(type, payload);
        _outgoing.Enqueue(message);
        return message;
    }

    // ---- poller thread ----

    private void Guarded(string what, Action handler)
    {
        try
        {
            handler();
        }
        catch (Exception exception)
        {
            string reason = $"the kernel runner client failed while {what}: {exception.GetType().Name}: {exception.Message}";
            try
            {
                AbortActiveRun(reason);
            }
            catch (Exception abortFailure)
            {
                reason += $" (ending the run failed too: {abortFailure.Message})";
            }
            RaiseFaulted(reason);
        }
    }

    private void RaiseFaulted(string reason)
    {
        try
        {
            Faulted?.Invoke(reason);
        }
        catch (Exception)
        {
            // A subscriber's bug must not take the poller thread (and the process) down.
        }
    }

    /// <summary>Ends the active run with an error note, as if it had finished, and fails waiting requests.</summary>
    private void AbortActiveRun(string reason)
    {
        ActiveRun? run;
        lock (_gate)
        {
            run = _run;
            if (run is not null)
            {
                run.Buffer.AppendOutput(RunnerMessageTypes.Stdout, _stdoutDecoder.Flush());
                run.Buffer.AppendOutput(RunnerMessageTypes.Stderr, _stderrDecoder.Flush());
                run.Buffer.AppendOutput(RunnerMessageTypes.Stderr, $"\n[kata-agent: {reason}; the run was aborted]\n");
                run.Buffer.AppendBoundary(new RunBoundary(ExecutionStatus.Finished, null, null));
                run.SeenBoundaries = run.ExpectedBoundaries;
                run.FinalEndArrivedAt ??= Stopwatch.GetTimestamp();
            }
            FailPendingReplies(new RunnerUnavailableException(reason));
        }
        run?.Signal.Set();
    }

    private void SendQueued()
    {
        while (_outgoing.TryDequeue(out OutgoingMessage? message, TimeSpan.Zero))
        {
            var frames = new NetMQMessage(2);
            frames.Append(Encoding.ASCII.GetBytes(message.Type));
            frames.Append(message.Payload);
            if (_push.TrySendMultipartMessage(TimeSpan.Zero, frames))
            {
                message.Sent.TrySetResult();
            }
            else
            {
                message.Sent.TrySetException(new RunnerUnavailableException(
                    $"cannot send '{message.Type}': the kernel runner is not taking messages (not connected and the send queue is full)"));
            }
        }
    }

    private void ReceiveAvailable()
    {
        var frames = new NetMQMessage();
        while (_pull.TryReceiveMultipartMessage(TimeSpan.Zero, ref frames))
        {
            if (RunnerMessage.TryParse(frames.Select(frame => frame.ToByteArray()).ToList(), out RunnerMessage message))
            {
                if (message.Seq is null || AcceptSequence(message))
                {
                    Dispatch(message);
                }
            }
            else
            {
                Interlocked.Increment(ref _ignoredMessages);
            }
        }
    }

    /// <summary>Routes one message from the runner. Internal so that tests can feed messages without sockets.</summary>
    internal void Dispatch(RunnerMessage message)
    {
        switch (message.Type)
        {
            case RunnerMessageTypes.Stdout or RunnerMessageTypes.Stderr or RunnerMessageTypes.Media
                or RunnerMessageTypes.Html or RunnerMessageTypes.Log:
                AcceptOutput(message);
                break;
            case RunnerMessageTypes.Finished or RunnerMessageTypes.BuildFinished or RunnerMessageTypes.CleanFinished
                or RunnerMessageTypes.WaitingInput:
                AcceptBoundary(message);
                break;
            case RunnerMessageTypes.CommandOutput or RunnerMessageTypes.CommandStarted or RunnerMessageTypes.CommandExit:
                AcceptCommandMessage(message);
                break;
            case RunnerMessageTypes.Completion or RunnerMessageTypes.Status or RunnerMessageTypes.ServiceResult
                or RunnerMessageTypes.AppsResult or RunnerMessageTypes.RunsResult or RunnerMessageTypes.CommandListResult
                or RunnerMessageTypes.Personalised:
                AcceptReply(message);
                break;
            case RunnerMessageTypes.ReplayGap:
                AcceptReplayGap(message);
                break;
            default:
                Interlocked.Increment(ref _ignoredMessages);
                break;
        }
    }

    private void AcceptOutput(RunnerMessage message)
    {
        ActiveRun? run;
        lock (_gate)
        {
            run = _boundariesToSkip > 0 ? null : _run;
            if (run is null)
            {
                Interlocked.Increment(ref _ignoredMessages);
                return;
            }
            if (message.Type == RunnerMessageTypes.Media)
            {
                (string mime, string data) = ReadMedia(message.Payload);
                run.Buffer.AppendOutput(RunnerMessageTypes.Media, data, mime);
            }
            else
            {
                string text = message.Type switch
                {
                    RunnerMessageTypes.Stdout => _stdoutDecoder.Decode(message.Payload),
                    RunnerMessageTypes.Stderr => _stderrDecoder.Decode(message.Payload),
                    _ => message.PayloadText,
                };
                run.Buffer.AppendOutput(message.Type, text);
            }
        }
        run.Signal.Set();
    }

    private void AcceptBoundary(RunnerMessage message)
    {
        ActiveRun? run;
        lock (_gate)
        {
            if (_boundariesToSkip > 0)
            {
                if (message.Type != RunnerMessageTypes.WaitingInput)
                {
                    _boundariesToSkip--;
                }
                return;
            }
            run = _run;
            if (run is null)
            {
                Interlocked.Increment(ref _ignoredMessages);
                return;
            }
            run.Buffer.AppendOutput(RunnerMessageTypes.Stdout, _stdoutDecoder.Flush());
            run.Buffer.AppendOutput(RunnerMessageTypes.Stderr, _stderrDecoder.Flush());
            (int? exitCode, JsonElement? options) = ReadEndPayload(message);
            if (message.Type != RunnerMessageTypes.WaitingInput && ++run.SeenBoundaries >= run.ExpectedBoundaries)
            {
                run.FinalEndArrivedAt ??= Stopwatch.GetTimestamp();
            }
            run.Buffer.AppendBoundary(new RunBoundary(message.Type, exitCode, options));
        }
        run.Signal.Set();
    }

    /// <summary>
    /// A `media` payload: JSON <c>{type, data}</c>. Data that is not a string is kept as its JSON text; a payload that
    /// is not such an object becomes media of unknown type ("") holding the payload text, so nothing is lost silently.
    /// </summary>
    internal static (string Mime, string Data) ReadMedia(byte[] payload)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(payload);
            JsonElement root = document.RootElement;
            if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("type", out JsonElement type) && type.ValueKind == JsonValueKind.String
                && root.TryGetProperty("data", out JsonElement data))
            {
                return (type.GetString()!, data.ValueKind == JsonValueKind.String ? data.GetString()! : data.GetRawText());
            }
        }
        catch (JsonException)
        {
            // not JSON: kept as is below
        }
        return ("", Encoding.UTF8.GetString(payload));
    }

    private static (int? ExitCode, JsonElement? Options) ReadEndPayload(RunnerMessage message)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(message.Payload.Length == 0 ? "{}"u8.ToArray() : message.Payload);
            JsonElement root = document.RootElement;
            if (message.Type == RunnerMessageTypes.WaitingInput)
            {
                return (null, root.Clone());
            }
            return root.ValueKind == JsonValueKind.Object && root.TryGetProperty("exitCode", out JsonElement exitCode)
                && exitCode.TryGetInt32(out int code) ? (code, null) : (null, null);
        }
        catch (JsonException)
        {
            return (null, null);
        }
    }

    private void AcceptReply(RunnerMessage message)
    {
        TaskCompletionSource<byte[]>? waiting = null;
        lock (_gate)
        {
            if (_pendingReplies.TryGetValue(message.Type, out Queue<TaskCompletionSource<byte[]>>? queue))
            {
                queue.TryDequeue(out waiting);
            }
        }
        if (waiting is null)
        {
            Interlocked.Increment(ref _ignoredMessages);
            return;
        }
        waiting.TrySetResult(message.Payload);
    }

    private void OnDisconnected()
    {
        // The monitor's event can come before the poller reads what the runner sent just before it went away
        // (its last output, a run's end); those messages are still queued on the socket and come first.
        ReceiveAvailable();
        _connected = false;
        bool hadRun;
        lock (_gate)
        {
            // A restarted runner knows nothing of earlier runs or requests, and numbers its output from 1 again.
            _boundariesToSkip = 0;
            ForgetSequenceLocked();
            hadRun = _run is not null;
        }
        string reason = $"lost the connection to the kernel runner (it stopped, or sent a message over the agent's limit of {_options.MaxMessageSize} bytes)"
            + (_options.Curve is null ? "" : " (with CURVE, also when the runner does not hold this session's key: it drops the connection at the handshake)");
        AbortActiveRun(reason);
        EndAllCommands(reason);
        if (hadRun)
        {
            RaiseFaulted(reason);
        }
    }

    private void FailPendingReplies(Exception error)
    {
        foreach (Queue<TaskCompletionSource<byte[]>> queue in _pendingReplies.Values)
        {
            while (queue.TryDequeue(out TaskCompletionSource<byte[]>? waiting))
            {
                waiting.TrySetException(error);
            }
        }
    }

    private sealed class OutgoingMessage(string type, byte[] payload)
    {
        public string Type { get; } = type;
        public byte[] Payload { get; } = payload;
        public TaskCompletionSource Sent { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>A run waiting for its turn; <see cref="Run"/> is set (under the gate) when it gets it.</summary>
    private sealed class QueuedRun(string runId, ExecutionMode mode, ExecutionOptions options)
    {
        public string RunId { get; } = runId;
        public ExecutionMode Mode { get; } = mode;
        public ExecutionOptions Options { get; } = options;
        public ActiveRun? Run { get; set; }
        public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed class ActiveRun(string runId, int expectedBoundaries, TimeSpan? execTimeout, long maxBufferedCharacters)
    {
        private readonly long _startedAt = Stopwatch.GetTimestamp();

        public string RunId { get; } = runId;
        public int ExpectedBoundaries { get; } = expectedBoundaries;
        public int SeenBoundaries { get; set; }
        public RunOutputBuffer Buffer { get; } = new(maxBufferedCharacters);
        public AsyncSignal Signal { get; } = new();
        public long DroppedCharacters { get; set; }
        public bool Collecting { get; set; }

        /// <summary>When the run's last end message arrived (Stopwatch timestamp); null while it runs.</summary>
        public long? FinalEndArrivedAt { get; set; }

        public TimeSpan? TimeUntilExecDeadline => execTimeout is TimeSpan limit ? limit - Stopwatch.GetElapsedTime(_startedAt) : null;

        public bool ExecDeadlinePassed => TimeUntilExecDeadline is TimeSpan left && left <= TimeSpan.Zero;
    }

}
