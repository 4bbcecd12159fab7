using System.Threading.Channels;
using KataAgent.Core.Sessions;

namespace KataAgent.Core.Registry;

/// <summary>
/// Lifecycle events from the moment of <see cref="Agent.Subscribe"/> on (it is registered before it is
/// returned, not on the first read). Dispose it to stop receiving.
/// </summary>
public sealed class SessionSubscription : IDisposable
{
    // Bounded: a subscriber that stops reading loses its oldest events, not the agent's memory.
    private readonly Channel<SessionEvent> _channel =
        Channel.CreateBounded<SessionEvent>(new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.DropOldest });
    private readonly Action<SessionSubscription> _unsubscribe;
    private int _disposed;

    internal SessionSubscription(Action<SessionSubscription> unsubscribe) => _unsubscribe = unsubscribe;

    /// <summary>The events received so far and from now on.</summary>
    public ChannelReader<SessionEvent> Events => _channel.Reader;

    /// <summary>The events, until the token is cancelled or the subscription is disposed.</summary>
    public IAsyncEnumerable<SessionEvent> ReadAllAsync(CancellationToken cancellationToken = default) =>
        _channel.Reader.ReadAllAsync(cancellationToken);

    internal void Offer(SessionEvent e) => _channel.Writer.TryWrite(e);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
            return;
        _unsubscribe(this);
        _channel.Writer.TryComplete();
    }
}
