using System.Runtime.CompilerServices;

namespace KataAgent.Runner.Protocol;

/// <summary>
/// The agent's side of one command started with <see cref="KernelRunnerClient.StartCommandAsync"/>. Output arrives
/// on the client's poller thread and waits here, bounded: past <see cref="MaxBufferedBytes"/> unread bytes the
/// oldest are dropped (and counted), so a command nobody reads (background) keeps only its recent output and the
/// agent never blocks on it. One reader at a time takes the output out; a later reader gets what is left.
/// </summary>
public sealed class RunnerCommand
{
    private readonly Lock _gate = new();
    private readonly Queue<CommandOutput> _pending = new();
    private readonly AsyncSignal _signal = new();
    private readonly TaskCompletionSource<CommandExit> _exit = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private CommandExit? _ended;
    private long _pendingBytes;
    private long _dropped;
    private bool _reading;

    internal RunnerCommand(string id, bool terminal, long maxBufferedBytes)
    {
        Id = id;
        Terminal = terminal;
        MaxBufferedBytes = maxBufferedBytes;
    }

    public string Id { get; }
    public bool Terminal { get; }
    public long MaxBufferedBytes { get; }

    /// <summary>The process id inside the session, once the runner started it.</summary>
    public int Pid { get; internal set; }

    /// <summary>Completes when the command has ended (after its last output arrived).</summary>
    public Task<CommandExit> Exited => _exit.Task;

    internal TaskCompletionSource<int> Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Unread output bytes held now.</summary>
    public long BufferedBytes
    {
        get
        {
            lock (_gate)
            {
                return _pendingBytes;
            }
        }
    }

    internal void Append(string stream, byte[] data)
    {
        lock (_gate)
        {
            if (_ended is not null)
            {
                return;
            }
            _pending.Enqueue(new CommandOutput(stream, data));
            _pendingBytes += data.Length;
            while (_pendingBytes > MaxBufferedBytes && _pending.Count > 0)
            {
                CommandOutput oldest = _pending.Dequeue();
                _pendingBytes -= oldest.Data.Length;
                _dropped += oldest.Data.Length;
            }
        }
        _signal.Set();
    }

    internal void Finish(CommandExit exit)
    {
        lock (_gate)
        {
            _ended ??= exit;
        }
        _exit.TrySetResult(exit);
        Started.TrySetException(new RunnerUnavailableException(exit.Error ?? "the command ended before it was reported started"));
        _ = Started.Task.Exception;
        _signal.Set();
    }

    /// <summary>
    /// Output as it arrives, then the <see cref="CommandExit"/>. Stopping early (cancel, or not reading on) leaves the
    /// command running and the unread output for the next reader.
    /// </summary>
    public async IAsyncEnumerable<CommandEvent> ReadEventsAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            if (_reading)
            {
                throw new InvalidOperationException($"command '{Id}' is already being read by another caller");
            }
            _reading = true;
        }
        try
        {
            while (true)
            {
                CommandOutput? next;
                CommandExit? exit = null;
                lock (_gate)
                {
                    if (_pending.TryDequeue(out next))
                    {
                        _pendingBytes -= next.Data.Length;
                        if (_dropped > 0)
                        {
                            next = next with { DroppedBefore = _dropped };
                            _dropped = 0;
                        }
                    }
                    else
                    {
                        exit = _ended;
                    }
                }
                if (next is not null)
                {
                    yield return next;
                    continue;
                }
                if (exit is not null)
                {
                    yield return exit;
                    yield break;
                }
                await _signal.WaitAsync(null, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            lock (_gate)
            {
                _reading = false;
            }
        }
    }
}
