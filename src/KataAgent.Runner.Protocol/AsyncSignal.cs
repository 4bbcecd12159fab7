using System.Threading.Channels;

namespace KataAgent.Runner.Protocol;

/// <summary>An auto-reset wake-up for one async waiter; a Set with nobody waiting is remembered once.</summary>
internal sealed class AsyncSignal
{
    private readonly Channel<bool> _pulses = Channel.CreateBounded<bool>(new BoundedChannelOptions(1)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    public void Set() => _pulses.Writer.TryWrite(true);

    /// <summary>Returns when set, or when <paramref name="timeout"/> passes (null: no limit).</summary>
    public async Task WaitAsync(TimeSpan? timeout, CancellationToken cancellationToken)
    {
        if (_pulses.Reader.TryRead(out _))
        {
            return;
        }
        if (timeout is null)
        {
            await _pulses.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            return;
        }
        if (timeout.Value <= TimeSpan.Zero)
        {
            return;
        }
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout.Value);
        try
        {
            await _pulses.Reader.ReadAsync(limit.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            // the timeout passed
        }
    }
}
