namespace KataAgent.BackendAi.Events;

/// <summary>Where and how the agent's events go (BA25: stream <c>events</c> in Redis db 4, trimmed to about 128 entries).</summary>
public sealed record RedisEventProducerOptions
{
    /// <summary>Backend.AI's REDIS_STREAM_DB.</summary>
    public const int StreamDatabase = 4;

    public required string Host { get; init; }

    public required int Port { get; init; }

    public string? Password { get; init; }

    public bool UseTls { get; init; }

    public int Database { get; init; } = StreamDatabase;

    /// <summary>The manager's anycast stream (read by consumer group <c>manager</c>).</summary>
    public string StreamKey { get; init; } = "events";

    /// <summary>XADD … MAXLEN ~ this.</summary>
    public int StreamMaxLength { get; init; } = 128;

    /// <summary>The broadcast channel (PUBLISH, JSON with base64 args) for the names in <see cref="BroadcastNames"/>.</summary>
    public string BroadcastChannel { get; init; } = "events_all";

    /// <summary>Events also published on <see cref="BroadcastChannel"/> (the manager's SSE hub reads them; not needed for state).</summary>
    public IReadOnlySet<string> BroadcastNames { get; init; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>Events waiting while Redis is unreachable; beyond it the oldest is dropped (and logged).</summary>
    public int BacklogCapacity { get; init; } = 1024;

    /// <summary>
    /// Events of which only the newest one waiting matters: a new one replaces the one still waiting (a heartbeat
    /// carries the agent's whole state, so an old one that was never sent adds nothing and would only push out
    /// kernel events the manager needs).
    /// </summary>
    public IReadOnlySet<string> SupersededNames { get; init; } =
        new HashSet<string>(StringComparer.Ordinal) { "agent_heartbeat", "agent_status_heartbeat" };

    public TimeSpan RetryInitialDelay { get; init; } = TimeSpan.FromMilliseconds(200);

    public TimeSpan RetryMaxDelay { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a command may take before it counts as failed (and is retried).</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long dispose waits for the backlog (e.g. agent_terminated) to go out.</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(5);
}
