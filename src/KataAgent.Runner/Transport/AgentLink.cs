using System.Diagnostics.CodeAnalysis;
using System.Text;
using NetMQ;
using NetMQ.Sockets;

namespace KataAgent.Runner.Transport;

/// <summary>A message from the agent: the two frames of the wire protocol.</summary>
internal readonly record struct AgentMessage(string Type, byte[] Payload)
{
    public string PayloadText => Encoding.UTF8.GetString(Payload);
}

/// <summary>
/// The runner's two ZeroMQ sockets: PULL (agent to runner) and PUSH (runner to agent), each owned by
/// its own thread. Outgoing messages are queued: replies to probes (status, completion, services)
/// jump ahead of run output so that they answer promptly even behind a flood of output; run output is
/// bounded, and a producer blocks when the agent is not reading (back-pressure down to the child).
/// </summary>
internal sealed class AgentLink : IDisposable
{
    // With messages of up to MaxRunOutputMessageBytes, the queue plus the socket's own high-water mark
    // hold at most ~80 MiB of output inside the guest while the agent is not reading.
    private const int RunOutputQueueCapacity = 64;
    private const int SendHighWatermark = 16;

    /// <summary>No stdout/stderr message is longer than this; the agent's sockets refuse far longer ones.</summary>
    public const int MaxRunOutputMessageBytes = 1024 * 1024;

    private readonly PullSocket _inbound = new();
    private readonly PushSocket _outbound = new();
    private readonly Queue<(string Type, byte[] Payload)> _replies = new();
    private readonly Queue<(string Type, byte[] Payload, SequencedOutput? Sequenced)> _runOutput = new();
    private readonly Lock _queueGate = new();
    // Not disposed: a SemaphoreSlim holds no OS handle unless AvailableWaitHandle is used (it is not), and a run
    // worker still finishing after Dispose's bounded Join may call SendRunOutput; it must not get ObjectDisposedException.
    [SuppressMessage("Reliability", "CA2213:Disposable fields should be disposed", Justification = "No OS handle; late senders must not throw.")]
    private readonly SemaphoreSlim _queued = new(0);
    [SuppressMessage("Reliability", "CA2213:Disposable fields should be disposed", Justification = "No OS handle; late senders must not throw.")]
    private readonly SemaphoreSlim _runOutputSlots = new(RunOutputQueueCapacity);
    // Cancelled by Dispose, not by SIGTERM: run output produced while the runner stops (a run's last lines) is still
    // queued until then. The send loop then sends what is queued and ends. The drain goes on while the agent takes
    // messages (each one sent moves _drainDeadline DrainStall further, up to _drainHardDeadline): an agent that reads
    // gets everything, one that stopped reading costs DrainStall.
    [SuppressMessage("Reliability", "CA2213:Disposable fields should be disposed", Justification = "No OS handle; late senders must not throw.")]
    private readonly CancellationTokenSource _closing = new();
    private readonly CancellationToken _stopping;
    private readonly List<Thread> _threads = [];
    private const int DrainStallMilliseconds = 2000;
    private const int DrainLimitMilliseconds = 5000;
    private long _drainDeadline = long.MaxValue;
    private long _drainHardDeadline = long.MaxValue;
    private readonly int _outboundPort;
    private long _lastSentAt = long.MinValue / 2;
    private bool _drainedAny;
    private long? _replayFrom;

    /// <param name="curveSecretKey">
    /// The runner's CURVE secret key (Z85): both sockets become CURVE servers. Null: the NULL mechanism,
    /// for runners started without a key file (the agent always provisions one).
    /// <para>
    /// NetMQ 4.0.4.5 has no ZAP, so the client's public key cannot be checked here: any client that
    /// knows our public key completes the handshake. A peer without it never does, so it cannot send
    /// code (PULL) and nothing is ever written to it (PUSH). Caveat: NetMQ attaches a peer's pipe at TCP
    /// accept, before the handshake, so the PUSH side may route a message to a peer that then fails (or
    /// never finishes) the handshake; that message is dropped, not disclosed.
    /// </para>
    /// </param>
    /// <param name="journal">Sequenced output (runner.json <c>sequencedOutput</c>); null: Backend.AI's plain two frames.</param>
    public AgentLink(string bindHost, int inboundPort, int outboundPort, string? curveSecretKey, CancellationToken stopping, RunJournal? journal = null)
    {
        _stopping = stopping;
        Journal = journal;
        if (curveSecretKey is not null)
        {
            NetMQCertificate certificate = NetMQCertificate.CreateFromSecretKey(curveSecretKey);
            foreach (NetMQSocket socket in new NetMQSocket[] { _inbound, _outbound })
            {
                socket.Options.CurveServer = true;
                socket.Options.CurveCertificate = certificate;
            }
        }
        _inbound.Options.Linger = TimeSpan.Zero;
        // Long enough to hand the last answers to a connected agent when the runner stops (Dispose waits for the wire).
        _outbound.Options.Linger = TimeSpan.FromSeconds(1);
        _outbound.Options.SendHighWatermark = SendHighWatermark;
        _outboundPort = outboundPort;
        _inbound.Bind($"tcp://{bindHost}:{inboundPort}");
        _outbound.Bind($"tcp://{bindHost}:{outboundPort}");
    }

    /// <summary>True once the runner was told to stop (SIGTERM or SIGINT).</summary>
    public bool Stopping => _stopping.IsCancellationRequested;

    /// <summary>Non-null when run output is sequenced and kept for replay.</summary>
    public RunJournal? Journal { get; }

    /// <summary>`replay`: resend the retained run output from <paramref name="from"/> on, ahead of the next live output. Never blocks.</summary>
    public void RequestReplay(long from)
    {
        lock (_queueGate)
        {
            _replayFrom = _replayFrom is long pending ? Math.Min(pending, from) : from;
        }
        _queued.Release();
    }

    /// <summary>Starts the receive and send threads. <paramref name="onMessage"/> runs on the receive thread.</summary>
    public void Start(Action<AgentMessage> onMessage)
    {
        _threads.Add(new Thread(() => ReceiveLoop(onMessage)) { IsBackground = true, Name = "agent-receive" });
        _threads.Add(new Thread(SendLoop) { IsBackground = true, Name = "agent-send" });
        foreach (Thread thread in _threads)
        {
            thread.Start();
        }
    }

    /// <summary>Queues a reply that must not wait behind run output. Never blocks.</summary>
    public void SendReply(string type, byte[] payload)
    {
        lock (_queueGate)
        {
            _replies.Enqueue((type, payload));
        }
        _queued.Release();
    }

    public void SendReply(string type, string payload) => SendReply(type, Encoding.UTF8.GetBytes(payload));

    /// <summary>
    /// Queues run output in order; blocks while the bounded queue is full. Output longer than
    /// <see cref="MaxRunOutputMessageBytes"/> goes as several messages (the agent decodes UTF-8 across them).
    /// </summary>
    public void SendRunOutput(string type, byte[] payload)
    {
        if (Stopping && type is "finished" or "clean-finished" or "build-finished" or "waiting-input")
        {
            // A run still going at SIGTERM is cut short by the stop, not ended on its own: the agent learns of it from
            // the runner's end (the session ended during the run). Its output up to here still goes.
            return;
        }
        if (payload.Length > MaxRunOutputMessageBytes)
        {
            for (int offset = 0; offset < payload.Length; offset += MaxRunOutputMessageBytes)
            {
                SendRunOutput(type, payload.AsSpan(offset, Math.Min(MaxRunOutputMessageBytes, payload.Length - offset)).ToArray());
            }
            return;
        }
        try
        {
            _runOutputSlots.Wait(_closing.Token);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        if (type is "finished" or "clean-finished" or "build-finished")
        {
            // Before the end goes out: a status asked the moment the agent sees it must already read idle.
            RunEnding?.Invoke();
        }
        lock (_queueGate)
        {
            // Numbered under the queue's lock: sequence order is send order.
            _runOutput.Enqueue((type, payload, Journal?.Assign(type, payload)));
        }
        _queued.Release();
    }

    /// <summary>Raised just before a run's end message is queued for the agent.</summary>
    public event Action? RunEnding;

    public void SendRunOutput(string type, string payload) => SendRunOutput(type, Encoding.UTF8.GetBytes(payload));

    private void ReceiveLoop(Action<AgentMessage> onMessage)
    {
        var message = new NetMQMessage();
        while (!_stopping.IsCancellationRequested)
        {
            try
            {
                if (!_inbound.TryReceiveMultipartMessage(TimeSpan.FromMilliseconds(250), ref message))
                {
                    continue;
                }
                if (message.FrameCount != 2)
                {
                    Log.Warn($"ignored a message with {message.FrameCount} frames (the protocol uses 2)");
                    continue;
                }
                string type = Encoding.ASCII.GetString(message[0].Buffer, 0, message[0].MessageSize);
                byte[] payload = message[1].ToByteArray();
                onMessage(new AgentMessage(type, payload));
            }
            catch (Exception exception) when (exception is not OutOfMemoryException)
            {
                // Garbage or a handler bug must never stop the runner from serving.
                Log.Warn($"failed to handle a message: {exception.Message}");
            }
        }
    }

    private void SendLoop()
    {
        while (true)
        {
            try
            {
                _queued.Wait(_closing.Token);
            }
            catch (OperationCanceledException)
            {
                // Closing: what was queued before still goes (the agent reads it before it sees the runner gone), and
                // so does what an output pump still adds while it empties a stopped process's pipes.
                // A close with nothing queued (the usual destroy of an idle session) costs nothing here.
                while (_queued.Wait(Volatile.Read(ref _drainedAny) ? 100 : 0))
                {
                    Volatile.Write(ref _drainedAny, true);
                    if (!SendNext())
                    {
                        return;
                    }
                }
                return;
            }
            if (!SendNext())
            {
                return;
            }
        }
    }

    /// <summary>Sends one queued item (a reply, a replay or one run output message); false when sending must end.</summary>
    private bool SendNext()
    {
        // Every wake-up is one reply, one replay or one run output message; a replay asked for twice
        // before it ran is done once, which leaves a wake-up with nothing to do.
        long? replayFrom;
        lock (_queueGate)
        {
            replayFrom = _replayFrom;
            _replayFrom = null;
        }
        if (replayFrom is long from)
        {
            List<(string Type, byte[] Payload, byte[]? Header)> replayed = Journal?.Replay(from) ?? [];
            Log.Debug($"replaying {replayed.Count} messages from seq {from}");
            foreach ((string type, byte[] payload, byte[]? header) in replayed)
            {
                if (!Send(type, payload, header))
                {
                    return false;
                }
            }
            return true;
        }
        (string Type, byte[] Payload, SequencedOutput? Sequenced) next;
        bool wasRunOutput = false;
        lock (_queueGate)
        {
            if (_replies.TryDequeue(out (string Type, byte[] Payload) reply))
            {
                next = (reply.Type, reply.Payload, null);
            }
            else if (_runOutput.TryDequeue(out next))
            {
                wasRunOutput = true;
            }
            else
            {
                return true;
            }
        }
        if (wasRunOutput)
        {
            _runOutputSlots.Release();
        }
        if (next.Sequenced is { } sequenced)
        {
            // Kept before it goes: a message a half-connected peer swallows can be asked for again.
            Journal!.Retain(sequenced);
        }
        return Send(next.Type, next.Payload, next.Sequenced?.Header);
    }

    /// <summary>Sends two frames, or three with a sequence header; false once the link is closing and its drain time is up.</summary>
    private bool Send(string type, byte[] payload, byte[]? header)
    {
        var message = new NetMQMessage(header is null ? 2 : 3);
        message.Append(Encoding.ASCII.GetBytes(type));
        message.Append(payload);
        if (header is not null)
        {
            message.Append(header);
        }
        // A bound PUSH socket blocks while no agent is connected: wait for one, but stay stoppable.
        while (!_outbound.TrySendMultipartMessage(TimeSpan.FromMilliseconds(250), message))
        {
            if (_closing.IsCancellationRequested && Environment.TickCount64 >= Volatile.Read(ref _drainDeadline))
            {
                return false;
            }
        }
        long now = Environment.TickCount64;
        Volatile.Write(ref _lastSentAt, now);
        if (_closing.IsCancellationRequested)
        {
            Volatile.Write(ref _drainDeadline, Math.Min(Volatile.Read(ref _drainHardDeadline), now + DrainStallMilliseconds));
        }
        return true;
    }

    // Sent within the last moments: what may still be on its way to the agent.
    private bool RecentlySent() => Volatile.Read(ref _drainedAny) || Environment.TickCount64 - Volatile.Read(ref _lastSentAt) < 100;

    /// <summary>
    /// Before the sockets close: waits until the agent's kernel has acknowledged every byte (in a container, the runner's
    /// exit takes its network namespace and whatever it still held). Quiet for 3 samples: NetMQ has nothing left to
    /// hand to the kernel either.
    /// Gives up when the queue stops shrinking for DrainStall (the agent is gone or not reading) or at the hard limit.
    /// </summary>
    private void WaitUntilTheAgentHasEverything()
    {
        int quietSamples = 0;
        long lastUnsent = long.MaxValue;
        long stalledSince = Environment.TickCount64;
        while (quietSamples < 3 && Environment.TickCount64 < Volatile.Read(ref _drainHardDeadline))
        {
            long unsent = AgentConnections.UnsentBytes(_outboundPort);
            long now = Environment.TickCount64;
            quietSamples = unsent == 0 ? quietSamples + 1 : 0;
            if (unsent < lastUnsent)
            {
                stalledSince = now;
            }
            else if (now - stalledSince >= DrainStallMilliseconds)
            {
                return;
            }
            lastUnsent = unsent;
            Thread.Sleep(10);
        }
    }

    public void Dispose()
    {
        long now = Environment.TickCount64;
        Volatile.Write(ref _drainHardDeadline, now + DrainLimitMilliseconds);
        Volatile.Write(ref _drainDeadline, now + DrainStallMilliseconds);
        _closing.Cancel();
        foreach (Thread thread in _threads)
        {
            thread.Join(TimeSpan.FromMilliseconds(DrainLimitMilliseconds + 1000));
        }
        if (RecentlySent())
        {
            WaitUntilTheAgentHasEverything();
        }
        AgentConnections.CloseWithoutReset(_outboundPort);
        _inbound.Dispose();
        _outbound.Dispose();
        NetMQConfig.Cleanup(block: false);
    }
}
