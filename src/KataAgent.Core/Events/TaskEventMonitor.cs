using System.Threading.Channels;
using KataAgent.Containerd;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Events;

public abstract record TaskEvent(string ContainerId, DateTimeOffset At);
public sealed record TaskExited(string ContainerId, int ExitCode, DateTimeOffset At) : TaskEvent(ContainerId, At);
public sealed record TaskOutOfMemory(string ContainerId, DateTimeOffset At) : TaskEvent(ContainerId, At);

/// <summary>
/// Death detection from containerd's event stream (no polling). Resubscribes when the stream
/// breaks, e.g. because containerd restarted; the caller reconciles after a gap.
/// </summary>
public sealed class TaskEventMonitor(ContainerdClient client, ILogger logger) : IAsyncDisposable
{
    private readonly Channel<TaskEvent> _events = Channel.CreateUnbounded<TaskEvent>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;

    public ChannelReader<TaskEvent> Events => _events.Reader;

    /// <summary>Raised after a resubscription: events may have been missed in between.</summary>
    public event Func<Task>? Resubscribed;

    /// <summary>Completes once the first subscription is established, so no later exit is missed.</summary>
    public Task StartAsync(CancellationToken cancellationToken = default)
    {
        var subscribed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _loop = Task.Run(() => RunAsync(subscribed, _stop.Token), CancellationToken.None);
        return subscribed.Task.WaitAsync(cancellationToken);
    }

    private async Task RunAsync(TaskCompletionSource subscribed, CancellationToken cancellationToken)
    {
        var marker = "/kata-agent/subscribed/" + Guid.NewGuid().ToString("N");
        var filters = new[]
        {
            $"namespace=={client.Namespace},topic==\"/tasks/exit\"",
            $"namespace=={client.Namespace},topic==\"/tasks/oom\"",
            $"topic==\"{marker}\"",
        };
        var delay = TimeSpan.FromMilliseconds(100);
        var first = true;
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                var stream = client.Events.SubscribeAsync(filters, cancellationToken).GetAsyncEnumerator(cancellationToken);
                try
                {
                    var moveNext = stream.MoveNextAsync().AsTask();
                    // Our own marker event coming back proves the subscription is live, so no exit
                    // after StartAsync returns can be missed.
                    await PublishMarkerUntilSeenAsync(stream, marker, moveNext, cancellationToken).ConfigureAwait(false);
                    if (first)
                        subscribed.TrySetResult();
                    else if (Resubscribed is { } handler)
                        await handler().ConfigureAwait(false);
                    first = false;
                    delay = TimeSpan.FromMilliseconds(100);
                    while (await stream.MoveNextAsync().ConfigureAwait(false))
                        Publish(stream.Current);
                }
                finally
                {
                    await stream.DisposeAsync().ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                logger.LogWarning("containerd event stream broke ({Message}); resubscribing in {Delay} ms", e.Message, delay.TotalMilliseconds);
            }
            try
            {
                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 5000));
        }
        subscribed.TrySetCanceled(cancellationToken);
        _events.Writer.TryComplete();
    }

    private async Task PublishMarkerUntilSeenAsync(IAsyncEnumerator<Containerd.Services.ContainerdEvent> stream, string marker,
        Task<bool> moveNext, CancellationToken cancellationToken)
    {
        var payload = new Google.Protobuf.WellKnownTypes.Any { TypeUrl = "kata-agent.SubscriptionMarker" };
        await client.Events.PublishAsync(marker, payload, cancellationToken).ConfigureAwait(false);
        while (true)
        {
            var winner = await Task.WhenAny(moveNext, Task.Delay(TimeSpan.FromSeconds(1), cancellationToken)).ConfigureAwait(false);
            if (winner != moveNext)
            {
                // The marker was published before the server registered us: send another.
                await client.Events.PublishAsync(marker, payload, cancellationToken).ConfigureAwait(false);
                continue;
            }
            if (!await moveNext.ConfigureAwait(false))
                throw new InvalidOperationException("containerd closed the event stream");
            if (stream.Current.Topic == marker)
                return;
            Publish(stream.Current);
            moveNext = stream.MoveNextAsync().AsTask();
        }
    }

    private void Publish(Containerd.Services.ContainerdEvent e)
    {
        switch (e.Payload)
        {
            case global::Containerd.Events.TaskExit exit when exit.Id == exit.ContainerId || string.IsNullOrEmpty(exit.Id):
                _events.Writer.TryWrite(new TaskExited(exit.ContainerId, (int)exit.ExitStatus, exit.ExitedAt?.ToDateTimeOffset() ?? e.Timestamp));
                break;
            case global::Containerd.Events.TaskOOM oom:
                _events.Writer.TryWrite(new TaskOutOfMemory(oom.ContainerId, e.Timestamp));
                break;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_loop is not null)
        {
            try
            {
                await _loop.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }
        _stop.Dispose();
    }
}
