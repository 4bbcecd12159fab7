namespace KataAgent.Core.Stats;

/// <summary>How often sessions are sampled and how much history is kept.</summary>
public sealed record StatsOptions
{
    /// <summary>Time between two collections (one containerd Metrics call for all sessions, plus /proc reads).</summary>
    public TimeSpan Interval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Samples kept per session (ring buffer); at the default interval, 10 minutes.</summary>
    public int HistoryLength { get; init; } = 120;

    internal void Validate()
    {
        if (Interval <= TimeSpan.Zero)
            throw new ArgumentException($"stats interval {Interval} must be positive");
        if (HistoryLength < 1)
            throw new ArgumentException($"stats history length {HistoryLength} must be at least 1");
    }
}
