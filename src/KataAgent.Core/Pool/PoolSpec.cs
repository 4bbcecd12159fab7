using System.Globalization;

namespace KataAgent.Core.Pool;

/// <summary>
/// One warm pool: running sandboxes of one (image, runtime class, resource shape), kept idle for creates that ask for
/// exactly that. <see cref="TargetIdle"/> is what the refiller aims for, <see cref="Min"/> what it restores first,
/// <see cref="Max"/> the most idle members (plus those being made) it ever holds.
/// </summary>
public sealed record PoolSpec
{
    public required string Image { get; init; }
    public required string RuntimeClass { get; init; }
    public required double Cpus { get; init; }
    public required long MemoryBytes { get; init; }
    public int Min { get; init; }
    public int Max { get; init; } = 2;
    public int TargetIdle { get; init; } = 1;

    /// <summary>The pool's name: what <c>pool ls</c> shows and the <c>io.kata-agent.pool</c> label carries.</summary>
    public string Key => string.Create(CultureInfo.InvariantCulture, $"{Image}@{RuntimeClass}/{Cpus:0.##}cpu/{MemoryBytes >> 20}MiB");

    /// <summary>Idle members the refiller keeps: the target, raised to the minimum, capped by the maximum.</summary>
    public int EffectiveTarget => Math.Min(Max, Math.Max(Min, TargetIdle));

    public void Validate()
    {
        var problems = new List<string>();
        if (string.IsNullOrWhiteSpace(Image))
            problems.Add("image is empty");
        if (string.IsNullOrWhiteSpace(RuntimeClass))
            problems.Add("runtime is empty");
        if (Cpus <= 0 || double.IsNaN(Cpus))
            problems.Add($"cpus {Cpus} must be > 0");
        if (MemoryBytes < (16L << 20))
            problems.Add($"memory {MemoryBytes} must be at least 16 MiB");
        if (Min < 0 || Max < 1 || TargetIdle < 0 || Min > Max || TargetIdle > Max)
            problems.Add($"sizes must satisfy 0 <= min <= max, 0 <= target_idle <= max, max >= 1 (got min {Min}, max {Max}, target_idle {TargetIdle})");
        if (problems.Count > 0)
            throw new ArgumentException($"pool {Key}: {string.Join("; ", problems)}");
    }
}

/// <summary>What <c>pool ls</c> shows of one pool.</summary>
public sealed record PoolStatus(
    string Key,
    PoolSpec Spec,
    int Idle,
    int Filling,
    long Claims,
    long Misses,
    long Refills,
    long RefillFailures,
    long Evictions,
    long Discarded,
    TimeSpan? LastRefill,
    TimeSpan? MeanRefill,
    string? LastError)
{
    /// <summary>The container ids of the idle members.</summary>
    public IReadOnlyList<string> IdleMembers { get; init; } = [];
}
