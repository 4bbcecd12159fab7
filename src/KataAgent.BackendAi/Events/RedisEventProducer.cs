using System.Globalization;
using System.Text.Json;
using KataAgent.BackendAi.Serialization;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace KataAgent.BackendAi.Events;

/// <summary>
/// Backend.AI 25.15's anycast events: <c>XADD events MAXLEN ~ 128 * name … source … args …</c> in db 4, where source
/// is the agent id and args the event's positional tuple packed with the Backend.AI codec. The caller never waits
/// for Redis: events queue in a bounded backlog that one sender drains in order; while Redis is unreachable the
/// sender retries the head with a growing delay, and the backlog drops its oldest entry when full (logged).
/// </summary>
public sealed class RedisEventProducer : IEventProducer, IAsyncDisposable
{
    private readonly RedisEventProducerOptions _options;
    private readonly string _source;
    private readonly IBackendAiCodec _codec;
    private readonly ILogger _logger;
    private readonly ConnectionMultiplexer _redis;
    private readonly LinkedList<PendingEvent> _backlog = new();
    private readonly SemaphoreSlim _wakeUp = new(0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _sender;
    private long _sent;
    private long _dropped;
    private long _superseded;
    private int _disposed;

    private RedisEventProducer(RedisEventProducerOptions options, string source, IBackendAiCodec codec, ConnectionMultiplexer redis, ILogger logger)
    {
        _options = options;
        _source = source;
        _codec = codec;
        _redis = redis;
        _logger = logger;
        _sender = Task.Run(() => SendLoopAsync(_stop.Token), CancellationToken.None);
    }

    /// <summary>Events written to the stream so far.</summary>
    public long SentCount => Interlocked.Read(ref _sent);

    /// <summary>Events dropped because the backlog was full.</summary>
    public long DroppedCount => Interlocked.Read(ref _dropped);

    /// <summary>Waiting events replaced by a newer one of the same name (see <see cref="RedisEventProducerOptions.SupersededNames"/>).</summary>
    public long SupersededCount => Interlocked.Read(ref _superseded);

    /// <summary>Events waiting for Redis.</summary>
    public int BacklogCount
    {
        get
        {
            lock (_backlog)
                return _backlog.Count;
        }
    }

    /// <summary>
    /// Connects in the background: returns at once even when Redis is down (events wait in the backlog).
    /// <paramref name="agentId"/> is the events' source.
    /// </summary>
    public static async Task<RedisEventProducer> StartAsync(RedisEventProducerOptions options, string agentId, IBackendAiCodec codec,
        ILogger logger, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(agentId);
        ArgumentException.ThrowIfNullOrEmpty(options.Host, nameof(options));
        if (options.Port is <= 0 or > 65535)
            throw new ArgumentOutOfRangeException(nameof(options), $"Redis port {options.Port} is not a TCP port");
        if (options.BacklogCapacity < 1)
            throw new ArgumentOutOfRangeException(nameof(options), "the event backlog needs room for at least one event");
        var timeout = (int)options.CommandTimeout.TotalMilliseconds;
        var configuration = new ConfigurationOptions
        {
            EndPoints = { { options.Host, options.Port } },
            Password = options.Password,
            Ssl = options.UseTls,
            DefaultDatabase = options.Database,
            AbortOnConnectFail = false,
            // Our own backlog decides what waits and what is dropped; the library's would hide failures.
            BacklogPolicy = BacklogPolicy.FailFast,
            ConnectTimeout = timeout,
            SyncTimeout = timeout,
            AsyncTimeout = timeout,
            ReconnectRetryPolicy = new ExponentialRetry((int)options.RetryInitialDelay.TotalMilliseconds, (int)options.RetryMaxDelay.TotalMilliseconds),
            ClientName = $"kata-agent-{agentId}",
        };
        var redis = await ConnectionMultiplexer.ConnectAsync(configuration).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        if (!redis.IsConnected)
            logger.LogWarning("Redis {Host}:{Port} is not reachable yet; events wait in the backlog until it is", options.Host, options.Port);
        return new RedisEventProducer(options, agentId, codec, redis, logger);
    }

    /// <summary>Packs the args now (a value the codec cannot carry fails here, in the caller) and queues the event.</summary>
    public ValueTask ProduceAsync(string name, IReadOnlyList<object?> args, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) == 1, this);
        var packed = _codec.Pack(args.ToArray());
        var pending = new PendingEvent(name, packed, DateTimeOffset.UtcNow);
        PendingEvent? dropped = null;
        var superseded = false;
        lock (_backlog)
        {
            if (_options.SupersededNames.Contains(name))
            {
                for (var node = _backlog.First; node is not null; node = node.Next)
                {
                    // The head may be on its way to Redis right now: leave it, it is as good as sent.
                    if (node != _backlog.First && node.Value.Name == name)
                    {
                        _backlog.Remove(node);
                        superseded = true;
                        break;
                    }
                }
            }
            if (_backlog.Count >= _options.BacklogCapacity)
            {
                dropped = _backlog.First!.Value;
                _backlog.RemoveFirst();
            }
            _backlog.AddLast(pending);
        }
        if (superseded)
            Interlocked.Increment(ref _superseded);
        if (dropped is not null)
        {
            Interlocked.Increment(ref _dropped);
            _logger.LogWarning("event backlog full ({Capacity}) while Redis is unreachable: dropped the oldest event, {Name} from {At:O}",
                _options.BacklogCapacity, dropped.Name, dropped.At);
        }
        _wakeUp.Release();
        return ValueTask.CompletedTask;
    }

    private async Task SendLoopAsync(CancellationToken cancellationToken)
    {
        var delay = _options.RetryInitialDelay;
        var failing = false;
        try
        {
            while (true)
            {
                await _wakeUp.WaitAsync(cancellationToken).ConfigureAwait(false);
                while (TryPeek(out var head))
                {
                    try
                    {
                        await SendAsync(head).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is RedisException or TimeoutException or ObjectDisposedException && !cancellationToken.IsCancellationRequested)
                    {
                        if (!failing)
                            _logger.LogWarning("cannot send event {Name} to Redis ({Message}); retrying with backoff, {Count} event(s) waiting", head.Name, e.Message, BacklogCount);
                        failing = true;
                        await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                        delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, _options.RetryMaxDelay.Ticks));
                        continue;
                    }
                    if (failing)
                        _logger.LogInformation("Redis is back: sending the {Count} waiting event(s)", BacklogCount);
                    failing = false;
                    delay = _options.RetryInitialDelay;
                    Interlocked.Increment(ref _sent);
                    lock (_backlog)
                    {
                        if (ReferenceEquals(_backlog.First?.Value, head))
                            _backlog.RemoveFirst();
                    }
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    private bool TryPeek(out PendingEvent head)
    {
        lock (_backlog)
        {
            head = _backlog.First?.Value!;
            return head is not null;
        }
    }

    private async Task SendAsync(PendingEvent e)
    {
        var db = _redis.GetDatabase(_options.Database);
        NameValueEntry[] fields = [new("name", e.Name), new("source", _source), new("args", e.Args)];
        await db.StreamAddAsync(_options.StreamKey, fields, maxLength: _options.StreamMaxLength, useApproximateMaxLength: true).ConfigureAwait(false);
        if (_options.BroadcastNames.Contains(e.Name))
        {
            var json = JsonSerializer.Serialize(new Dictionary<string, string>
            {
                ["name"] = e.Name,
                ["source"] = _source,
                ["args"] = Convert.ToBase64String(e.Args),
            });
            await _redis.GetSubscriber().PublishAsync(RedisChannel.Literal(_options.BroadcastChannel), json).ConfigureAwait(false);
        }
    }

    /// <summary>Waits (up to <paramref name="timeout"/>) until every queued event is in Redis; false when some are still waiting.</summary>
    public async Task<bool> FlushAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var deadline = DateTimeOffset.UtcNow + timeout;
        while (BacklogCount > 0)
        {
            if (DateTimeOffset.UtcNow >= deadline || _sender.IsCompleted)
                return false;
            await Task.Delay(20, cancellationToken).ConfigureAwait(false);
        }
        return true;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
            return;
        // agent_terminated is usually the last event: give it its chance to leave.
        if (!await FlushAsync(_options.DrainTimeout).ConfigureAwait(false))
        {
            _logger.LogWarning("stopping with {Count} event(s) not delivered to Redis {Host}:{Port}", BacklogCount, _options.Host,
                _options.Port.ToString(CultureInfo.InvariantCulture));
        }
        await _stop.CancelAsync().ConfigureAwait(false);
        await _sender.ConfigureAwait(false);
        await _redis.CloseAsync(allowCommandsToComplete: false).ConfigureAwait(false);
        await _redis.DisposeAsync().ConfigureAwait(false);
        _stop.Dispose();
        _wakeUp.Dispose();
    }

    private sealed record PendingEvent(string Name, byte[] Args, DateTimeOffset At);
}
