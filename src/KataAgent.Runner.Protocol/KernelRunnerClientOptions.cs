namespace KataAgent.Runner.Protocol;

/// <summary>Where the runner's ports are published on the host, and the client's limits.</summary>
public sealed record KernelRunnerClientOptions
{
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>Host port published for the runner's PULL port (2000 in the guest).</summary>
    public required int InputPort { get; init; }

    /// <summary>Host port published for the runner's PUSH port (2001 in the guest).</summary>
    public required int OutputPort { get; init; }

    /// <summary>
    /// The session's CURVE keys: both sockets become CURVE clients of the runner. Null: the NULL
    /// mechanism, for runners started without a key file (Backend.AI's own, tests).
    /// </summary>
    public RunnerCurveKeys? Curve { get; init; }

    /// <summary>How long status, completion, service and apps requests wait for their answer.</summary>
    public TimeSpan ReplyTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Starting start-service waits for the service's port: give it longer.</summary>
    public TimeSpan ServiceStartTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>First reconnect delay after the runner went away (ZeroMQ reconnects by itself).</summary>
    public TimeSpan ReconnectInterval { get; init; } = TimeSpan.FromMilliseconds(100);

    public TimeSpan ReconnectIntervalMax { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Output of the active run that may wait uncollected; beyond it the oldest is dropped and replaced
    /// by a marker (see <see cref="ExecutionResult.DroppedCharacters"/>). Default 8 Mi characters.
    /// </summary>
    public long MaxBufferedCharacters { get; init; } = 8L * 1024 * 1024;

    /// <summary>
    /// Largest message (frame) accepted from the runner. A longer one makes the socket drop the
    /// connection before the message is allocated; the active run then ends with an error. Our runner
    /// never sends more than 1 MiB at once. Default 16 MiB.
    /// </summary>
    public long MaxMessageSize { get; init; } = DefaultMaxMessageSize;

    public const long DefaultMaxMessageSize = 16L * 1024 * 1024;

    /// <summary>
    /// Runs that may wait for their turn while another is active (runs are queued per run id and start in
    /// the order they were requested). One more is refused with <see cref="RunQueueFullException"/>.
    /// </summary>
    public int MaxQueuedRuns { get; init; } = 16;

    /// <summary>
    /// A run whose final end has arrived but that nobody collects (its caller went away) holds up the
    /// queued runs this long after its end arrived; then it is dropped and the next run starts.
    /// </summary>
    public TimeSpan UncollectedEndGrace { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The runner was started with runner.json <c>sequencedOutput</c>: runs are labelled with their run id, a gap in
    /// the sequence or <see cref="ReplayAfterSilence"/> without output during a run asks the runner to resend
    /// (`replay`), and <see cref="KernelRunnerClient.ResumeAsync"/> can adopt a run a previous client started.
    /// </summary>
    public bool SequencedOutput { get; init; }

    /// <summary>
    /// While a run is active and nothing arrived for this long, ask for a replay from the last sequence number held
    /// (a message may have been dropped, e.g. its final `finished`). Sequenced mode only.
    /// </summary>
    public TimeSpan ReplayAfterSilence { get; init; } = TimeSpan.FromSeconds(1.5);
}
