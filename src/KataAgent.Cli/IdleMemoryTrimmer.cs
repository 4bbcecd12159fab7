namespace KataAgent.Cli;

/// <summary>
/// Gives the serve's memory back to the system once it has gone quiet: a burst of work (creates, image imports,
/// transfers) grows the GC heap, and without a collection that compacts and releases, the process keeps that RSS for as
/// long as it idles. One aggressive collection per quiet spell that follows work; nothing while busy or still idle.
/// </summary>
internal sealed class IdleMemoryTrimmer : IAsyncDisposable
{
    /// <summary>Less allocated than this between two checks counts as quiet (an idle serve with sessions allocates far less).</summary>
    public const long QuietBytes = 4L << 20;

    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    private IdleMemoryTrimmer(TimeSpan interval) => _loop = RunAsync(interval, _stop.Token);

    /// <summary>How many trims ran (for the tests and the log).</summary>
    public int Trims { get; private set; }

    public static IdleMemoryTrimmer Start(TimeSpan interval) => new(interval);

    /// <summary>
    /// The decision, apart from the clock: after a check that saw <paramref name="allocatedSinceLastCheck"/> bytes
    /// allocated, whether to trim now, given whether work happened since the last trim (updated).
    /// </summary>
    public static bool ShouldTrim(long allocatedSinceLastCheck, ref bool workSinceLastTrim)
    {
        if (allocatedSinceLastCheck >= QuietBytes)
        {
            workSinceLastTrim = true;
            return false;
        }
        if (!workSinceLastTrim)
            return false;
        workSinceLastTrim = false;
        return true;
    }

    private async Task RunAsync(TimeSpan interval, CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(interval);
        // The start itself (containerd, recovery, JIT) is work: the first quiet spell trims it.
        var work = true;
        var last = GC.GetTotalAllocatedBytes();
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                var now = GC.GetTotalAllocatedBytes();
                if (ShouldTrim(now - last, ref work))
                {
                    GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                    Trims++;
                }
                last = GC.GetTotalAllocatedBytes();
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        _stop.Dispose();
    }
}
