using KataAgent.BackendAi.Serialization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using NetMQ;
using NetMQ.Sockets;

namespace KataAgent.BackendAi.Rpc;

/// <summary>
/// The agent's side of Backend.AI's manager RPC: a Callosum peer on a ZeroMQ ROUTER socket, the manager's DEALER
/// connecting to it.
/// <para>
/// Wire (Callosum 1.0.x): <c>[identity, "PING", a, b]</c> is answered <c>[identity, "PONG", a, b]</c> (the handshake
/// Callosum does after connecting); <c>[identity, "UPPER", header, body]</c> carries an RPC message; anything else is
/// dropped. A FUNCTION runs its handler as a task of its own and the reply leaves when the handler ends, so replies
/// leave in completion order (Backend.AI's <c>ExitOrderedAsyncScheduler</c>). A CANCEL naming a running FUNCTION
/// cancels its handler's token and the reply becomes CANCELLED.
/// </para>
/// <para>
/// Threading: NetMQ sockets are not thread-safe, so one poller thread owns the socket: it reads requests, answers
/// PING and CANCEL, and sends the replies handlers queue through a <see cref="NetMQQueue{T}"/>. Bodies are decoded
/// and handlers run on the thread pool.
/// </para>
/// </summary>
public sealed class CallosumRpcServer : IAsyncDisposable
{
    // Per poller wake-up, so that a flood of requests cannot starve the replies (and the other way round).
    private const int MessagesPerWakeUp = 64;
    private static readonly TimeSpan FlushTimeout = TimeSpan.FromSeconds(5);

    private readonly CallosumRpcServerOptions _options;
    private readonly IRpcDispatcher _dispatcher;
    private readonly IBackendAiCodec _codec;
    private readonly ILogger _logger;
    private readonly RouterSocket _socket = new();
    private readonly NetMQQueue<Outgoing> _outgoing = new();
    private readonly NetMQPoller _poller;
    private readonly TaskCompletionSource _pollerStopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _gate = new();
    private readonly Dictionary<string, InFlightCall> _inFlight = new(StringComparer.Ordinal);
    private Task? _disposal;
    private long _droppedMessages;

    /// <summary>Binds the socket and starts serving; throws (leaving nothing bound) when the endpoint cannot be bound.</summary>
    public CallosumRpcServer(CallosumRpcServerOptions options, IRpcDispatcher dispatcher, IBackendAiCodec codec, ILogger? logger = null)
    {
        _options = options;
        _dispatcher = dispatcher;
        _codec = codec;
        _logger = logger ?? NullLogger.Instance;
        try
        {
            _socket.Options.Linger = options.Linger;
            if (options.MaxMessageSize is long limit)
                _socket.Options.MaxMsgSize = limit;
            if (options.Curve is { } curve)
            {
                _socket.Options.CurveServer = true;
                _socket.Options.CurveCertificate = curve.ServerCertificate;
                if (curve.ManagerPublicKeyZ85 is not null)
                {
                    _logger.LogWarning("RPC CURVE is on, but only the manager's key ({ManagerKey}) should be admitted and NetMQ " +
                        "has no ZAP hook to check client keys: any client that knows this agent's public key ({AgentKey}) can call it " +
                        "(docs/BACKENDAI.md, RPC)", curve.ManagerPublicKeyZ85, curve.ServerCertificate.PublicKeyZ85);
                }
            }
            _socket.Bind(options.Endpoint);
            Endpoint = _socket.Options.LastEndpoint
                ?? throw new InvalidOperationException($"NetMQ did not report the endpoint it bound for {options.Endpoint}");
        }
        catch (Exception exception)
        {
            _socket.Dispose();
            _outgoing.Dispose();
            if (exception is NetMQException)
                throw new IOException($"cannot bind the Backend.AI RPC socket on {options.Endpoint}: {exception.Message}", exception);
            throw;
        }
        // Anything escaping a poller handler would end the poller thread, and with it the agent's RPC service.
        _socket.ReceiveReady += (_, _) => Guarded("reading requests", ReceiveRequests);
        _outgoing.ReceiveReady += (_, _) => Guarded("sending replies", SendQueued);
        _poller = [_socket, _outgoing];
        new Thread(RunPoller) { IsBackground = true, Name = "callosum-rpc" }.Start();
        _logger.LogInformation("Backend.AI RPC server listening on {Endpoint}{Curve}", Endpoint,
            options.Curve is null ? "" : $" (CURVE, public key {options.Curve.ServerCertificate.PublicKeyZ85})");
    }

    /// <summary>The bound endpoint, with the actual port when the options asked for port 0.</summary>
    public string Endpoint { get; }

    /// <summary>Messages dropped unanswered: wrong frame count or type, unreadable header, stray reply types.</summary>
    public long DroppedMessages => Interlocked.Read(ref _droppedMessages);

    /// <summary>FUNCTION requests whose handlers have not ended yet.</summary>
    public int InFlightCalls
    {
        get
        {
            lock (_gate)
            {
                return _inFlight.Count;
            }
        }
    }

    /// <summary>
    /// Cancels the running handlers, waits (up to <see cref="CallosumRpcServerOptions.ShutdownGrace"/>) for them to
    /// end and their replies (CANCELLED for the cancelled ones) to leave, then closes the socket and frees the port.
    /// </summary>
    public ValueTask DisposeAsync()
    {
        lock (_gate)
        {
            _disposal ??= ShutDownAsync();
            return new ValueTask(_disposal);
        }
    }

    private async Task ShutDownAsync()
    {
        List<InFlightCall> running;
        lock (_gate)
        {
            running = [.. _inFlight.Values];
            foreach (InFlightCall call in running)
            {
                RequestCancel(call);
            }
        }
        try
        {
            await Task.WhenAll(running.Select(call => call.Served)).WaitAsync(_options.ShutdownGrace).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            _logger.LogWarning("{Count} RPC handlers still running {Grace} after they were cancelled; closing the socket without their replies",
                running.Count(call => !call.Served.IsCompleted), _options.ShutdownGrace);
        }
        var flushed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _outgoing.Enqueue(new Outgoing(null, flushed));
        try
        {
            await flushed.Task.WaitAsync(FlushTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            _logger.LogWarning("the RPC poller did not send the last replies within {Timeout}", FlushTimeout);
        }
        _poller.StopAsync();
        await _pollerStopped.Task.ConfigureAwait(false);
        _poller.Dispose();
        _socket.Dispose();
        _outgoing.Dispose();
        _logger.LogInformation("Backend.AI RPC server on {Endpoint} closed", Endpoint);
    }

    private void RunPoller()
    {
        try
        {
            _poller.Run();
        }
        catch (Exception exception)
        {
            _logger.LogCritical(exception, "the RPC poller thread failed; the agent no longer answers the manager");
        }
        finally
        {
            _pollerStopped.TrySetResult();
        }
    }

    private void Guarded(string what, Action action)
    {
        try
        {
            action();
        }
        catch (Exception exception)
        {
            _logger.LogError(exception, "RPC server: unexpected failure {What}; serving on", what);
        }
    }

    // ---- Poller thread ----

    private void ReceiveRequests()
    {
        for (int i = 0; i < MessagesPerWakeUp; i++)
        {
            NetMQMessage? message = null;
            if (!_socket.TryReceiveMultipartMessage(ref message))
                return;
            try
            {
                HandleMessage(message!);
            }
            catch (Exception exception)
            {
                Drop($"handling it failed: {exception.Message}");
            }
        }
    }

    private void HandleMessage(NetMQMessage message)
    {
        if (message.FrameCount != 4)
        {
            Drop($"{message.FrameCount} frames (a Callosum message has an identity and 3)");
            return;
        }
        byte[] identity = message[0].ToByteArray();
        ReadOnlySpan<byte> kind = FrameSpan(message[1]);
        if (kind.SequenceEqual("PING"u8))
        {
            var pong = new NetMQMessage(4);
            pong.Append(identity);
            pong.Append("PONG"u8.ToArray());
            pong.Append(message[2]);
            pong.Append(message[3]);
            _socket.TrySendMultipartMessage(pong);
            return;
        }
        if (!kind.SequenceEqual("UPPER"u8))
        {
            Drop($"frame type {Printable(kind)} (expected PING or UPPER)");
            return;
        }
        CallosumHeader? header = CallosumHeader.TryDecode(FrameMemory(message[2]), out string? unanswerable);
        if (header is null)
        {
            Drop(unanswerable!);
            return;
        }
        if (header.Problem is string problem)
        {
            SendNow(identity, header, CallosumMessageType.Error, ErrorBody(PythonStyleError.From("ValueError", $"bad Callosum header: {problem}")));
            return;
        }
        switch ((CallosumMessageType)header.Type!.Value)
        {
            case CallosumMessageType.Function:
                StartCall(identity, header, FrameMemory(message[3]));
                break;
            case CallosumMessageType.Cancel:
                CancelCall(identity, header);
                break;
            default:
                // The agent calls nothing on the manager, so no RESULT, FAILURE, ... can be due to it.
                Drop($"message type {header.Type} for {header.MethodForDisplay} (the agent only serves FUNCTION and CANCEL)");
                break;
        }
    }

    private void StartCall(byte[] identity, CallosumHeader header, ReadOnlyMemory<byte> body)
    {
        string key = CallKey(identity, header);
        lock (_gate)
        {
            if (_disposal is not null)
            {
                SendNow(identity, header, CallosumMessageType.Error,
                    ErrorBody(PythonStyleError.From("RuntimeError", "the agent's RPC server is shutting down")));
                return;
            }
            if (_inFlight.ContainsKey(key))
            {
                SendNow(identity, header, CallosumMessageType.Error, ErrorBody(PythonStyleError.From("RuntimeError",
                    $"duplicate request: {header.MethodForDisplay} with this okey and seq is still running")));
                return;
            }
            var call = new InFlightCall(identity, header);
            _inFlight[key] = call;
            call.Served = Task.Run(() => ServeAsync(key, call, body));
        }
    }

    private void CancelCall(byte[] identity, CallosumHeader header)
    {
        lock (_gate)
        {
            if (_inFlight.TryGetValue(CallKey(identity, header), out InFlightCall? call))
            {
                RequestCancel(call);
                return;
            }
        }
        // As Callosum: a CANCEL that crossed the reply (or names nothing) needs no answer.
        _logger.LogDebug("RPC CANCEL for {Method}, which is not running (already answered?)", header.MethodForDisplay);
    }

    // Under _gate.
    private void RequestCancel(InFlightCall call)
    {
        if (call.CancelRequested)
            return;
        call.CancelRequested = true;
        // Callbacks run on the thread pool: a handler's slow callback must not hold up the poller thread.
        call.Cancelling = call.Cancellation.CancelAsync();
    }

    private void SendQueued()
    {
        for (int i = 0; i < MessagesPerWakeUp && _outgoing.TryDequeue(out Outgoing? item, TimeSpan.Zero); i++)
        {
            if (item.Flushed is { } flushed)
                flushed.TrySetResult();
            else if (!_socket.TrySendMultipartMessage(item.Message!))
                _logger.LogDebug("RPC reply not sent: the socket would block");
        }
    }

    private void SendNow(byte[] identity, CallosumHeader header, CallosumMessageType type, byte[] body) =>
        _socket.TrySendMultipartMessage(Reply(identity, header, type, body));

    private void Drop(string why)
    {
        Interlocked.Increment(ref _droppedMessages);
        _logger.LogDebug("RPC message dropped: {Reason}", why);
    }

    // ---- Handler tasks ----

    private async Task ServeAsync(string key, InFlightCall call, ReadOnlyMemory<byte> body)
    {
        (CallosumMessageType type, byte[] replyBody) reply;
        try
        {
            reply = await AnswerAsync(call, body).ConfigureAwait(false);
        }
        catch (Exception exception)
        {
            _logger.LogError(exception, "RPC {Method}: answering failed", call.Header.MethodForDisplay);
            reply = (CallosumMessageType.Error, ErrorBody(PythonStyleError.From(exception)));
        }
        lock (_gate)
        {
            _inFlight.Remove(key);
        }
        if (call.Cancelling is Task cancelling)
        {
            try
            {
                await cancelling.ConfigureAwait(false);
            }
            catch (Exception exception)
            {
                _logger.LogWarning(exception, "RPC {Method}: a cancellation callback failed", call.Header.MethodForDisplay);
            }
        }
        call.Cancellation.Dispose();
        _outgoing.Enqueue(new Outgoing(Reply(call.Identity, call.Header, reply.type, reply.replyBody), null));
    }

    private async Task<(CallosumMessageType, byte[])> AnswerAsync(InFlightCall call, ReadOnlyMemory<byte> body)
    {
        CallosumHeader header = call.Header;
        if (header.Method is not string method)
            return Error(PythonStyleError.From("TypeError", $"the method name (meth) must be a msgpack str, got 0x{Convert.ToHexString(header.RawMethod)}"));
        if (!_dispatcher.TryGetHandler(method, out RpcHandler handler))
        {
            return Error(new PythonStyleError("KeyError", $"KeyError({PythonStyleError.PythonStringRepr(method)})",
                $"KeyError: {PythonStyleError.PythonStringRepr(method)} (this agent has no RPC method of that name)\n"));
        }
        RpcCall rpcCall;
        try
        {
            rpcCall = DecodeCall(method, body, header.Zip!.Value);
        }
        catch (CallosumProtocolException exception)
        {
            _logger.LogWarning("RPC {Method}: undecodable request: {Problem}", method, exception.Message);
            return Error(PythonStyleError.From(exception));
        }

        object? result;
        try
        {
            result = await handler(rpcCall, call.Cancellation.Token).ConfigureAwait(false);
        }
        catch (Exception) when (call.CancelRequested)
        {
            return (CallosumMessageType.Cancelled, CallosumBody.EncodeCancelled());
        }
        catch (Exception exception)
        {
            _logger.LogInformation(exception, "RPC {Method} failed", method);
            return (CallosumMessageType.Failure, ErrorBody(PythonStyleError.From(exception)));
        }
        // The client gave up on this call: whatever the handler made of it, the answer it waits for is CANCELLED.
        if (call.CancelRequested)
            return (CallosumMessageType.Cancelled, CallosumBody.EncodeCancelled());
        byte[] document;
        try
        {
            document = _codec.Pack(result);
        }
        catch (Exception exception)
        {
            _logger.LogError(exception, "RPC {Method}: cannot pack the return value ({Type})", method, result?.GetType().FullName ?? "null");
            return Error(PythonStyleError.From("TypeError",
                $"cannot serialize the return value of {method} ({result?.GetType().FullName ?? "null"}): {exception.Message}", exception));
        }
        return (CallosumMessageType.Result, CallosumBody.EncodeResult(document));

        static (CallosumMessageType, byte[]) Error(PythonStyleError error) => (CallosumMessageType.Error, ErrorBody(error));
    }

    private RpcCall DecodeCall(string method, ReadOnlyMemory<byte> body, bool zip)
    {
        ReadOnlyMemory<byte>? document = CallosumBody.ReadFunctionDocument(body, zip);
        if (document is not ReadOnlyMemory<byte> bytes)
            return new RpcCall(method, [], new Dictionary<string, object?>());
        object? value;
        try
        {
            value = _codec.Unpack(bytes);
        }
        catch (Exception exception)
        {
            throw new CallosumProtocolException("ValueError", $"cannot decode the arguments of {method}: {exception.Message}", exception);
        }
        // Backend.AI's agent calls method() for a None body, method(*args, **kwargs) otherwise.
        if (value is null)
            return new RpcCall(method, [], new Dictionary<string, object?>());
        if (value is not Dictionary<object, object?> envelope)
            throw new CallosumProtocolException("TypeError", $"the arguments of {method} are a {value.GetType().Name}, not a map with args and kwargs");
        if (!envelope.TryGetValue("args", out object? args) || !envelope.TryGetValue("kwargs", out object? kwargs))
            throw new CallosumProtocolException("KeyError", $"the arguments of {method} lack 'args' or 'kwargs'");
        if (args is not object?[] positional)
            throw new CallosumProtocolException("TypeError", $"args of {method} is a {args?.GetType().Name ?? "nil"}, not an array");
        if (kwargs is not Dictionary<object, object?> keywordMap)
            throw new CallosumProtocolException("TypeError", $"kwargs of {method} is a {kwargs?.GetType().Name ?? "nil"}, not a map");
        var keywords = new Dictionary<string, object?>(keywordMap.Count, StringComparer.Ordinal);
        foreach ((object name, object? value2) in keywordMap)
        {
            if (name is not string text)
                throw new CallosumProtocolException("TypeError", $"kwargs of {method} has a {name.GetType().Name} key; keywords must be str");
            keywords[text] = value2;
        }
        return new RpcCall(method, positional, keywords);
    }

    // ---- Encoding ----

    private static NetMQMessage Reply(byte[] identity, CallosumHeader header, CallosumMessageType type, byte[] body)
    {
        var reply = new NetMQMessage(4);
        reply.Append(identity);
        reply.Append("UPPER"u8.ToArray());
        reply.Append(header.EncodeReply(type));
        reply.Append(body);
        return reply;
    }

    private static byte[] ErrorBody(PythonStyleError error) => CallosumBody.EncodeError(error.Name, error.Repr, error.Traceback);

    private static string CallKey(byte[] identity, CallosumHeader header) => Convert.ToHexString(identity) + "|" + header.RequestKey;

    private static ReadOnlySpan<byte> FrameSpan(NetMQFrame frame) => frame.Buffer.AsSpan(0, frame.MessageSize);

    private static ReadOnlyMemory<byte> FrameMemory(NetMQFrame frame) => frame.Buffer.AsMemory(0, frame.MessageSize);

    private static string Printable(ReadOnlySpan<byte> bytes) =>
        bytes.Length <= 16 && bytes.IndexOfAnyExceptInRange((byte)0x20, (byte)0x7e) < 0
            ? $"'{System.Text.Encoding.ASCII.GetString(bytes)}'"
            : $"0x{Convert.ToHexString(bytes[..Math.Min(bytes.Length, 16)])}{(bytes.Length > 16 ? "..." : "")}";

    private sealed record Outgoing(NetMQMessage? Message, TaskCompletionSource? Flushed);

    private sealed class InFlightCall(byte[] identity, CallosumHeader header)
    {
        public byte[] Identity { get; } = identity;

        public CallosumHeader Header { get; } = header;

        public CancellationTokenSource Cancellation { get; } = new();

        private volatile bool _cancelRequested;

        /// <summary>Set under the server's gate; read by the handler's task.</summary>
        public bool CancelRequested
        {
            get => _cancelRequested;
            set => _cancelRequested = value;
        }

        public Task? Cancelling { get; set; }

        public Task Served { get; set; } = Task.CompletedTask;
    }
}
