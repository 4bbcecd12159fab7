using KataAgent.Core.Registry;
using KataAgent.Core.Sessions;

namespace KataAgent.Core.Tests;

/// <summary>
/// Every session event from the moment it is made, read by one pump: waiting for several kinds at once is safe (a
/// subscription is a channel, so two readers of it would each see only part of the events).
/// </summary>
internal sealed class SessionEventLog : IDisposable
{
    private readonly SessionSubscription _subscription;
    private readonly List<SessionEvent> _events = [];
    private readonly CancellationTokenSource _stop = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public SessionEventLog(Agent agent)
    {
        _subscription = agent.Subscribe();
        _ = Task.Run(PumpAsync);
    }

    private async Task PumpAsync()
    {
        try
        {
            await foreach (var e in _subscription.ReadAllAsync(_stop.Token))
            {
                TaskCompletionSource changed;
                lock (_events)
                {
                    _events.Add(e);
                    changed = _changed;
                    _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }
                changed.TrySetResult();
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>The first event of <paramref name="kind"/> for the session (already seen or still to come).</summary>
    public async Task<SessionEvent> WaitForAsync(string kernelId, string kind, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(120));
        while (true)
        {
            Task changed;
            lock (_events)
            {
                if (_events.FirstOrDefault(e => e.KernelId == kernelId && e.Kind == kind) is { } found)
                    return found;
                changed = _changed.Task;
            }
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || await Task.WhenAny(changed, Task.Delay(left)) != changed)
            {
                string seen;
                lock (_events)
                    seen = string.Join(", ", _events.Where(e => e.KernelId == kernelId).Select(e => e.Kind));
                throw new TimeoutException($"no {kind} event for {kernelId} (seen: {seen})");
            }
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _subscription.Dispose();
        _stop.Dispose();
    }
}
