using KataAgent.Containerd.Private;

namespace KataAgent.Core;

public sealed partial class Agent
{
    /// <summary>
    /// Stops and starts the private containerd (chaos testing, and recovery from a wedged daemon).
    /// Sessions keep running in their shims; the event stream resubscribes by itself.
    /// </summary>
    public async Task RestartContainerdAsync(CancellationToken cancellationToken = default)
    {
        var current = _privateContainerd ?? throw new InvalidOperationException("the agent uses an external containerd; restart it with its own tools");
        await current.StopAsync(TimeSpan.FromSeconds(15), cancellationToken).ConfigureAwait(false);
        _privateContainerd = await PrivateContainerd.StartAsync(new PrivateContainerdOptions(current.RootDir), cancellationToken).ConfigureAwait(false);
        await current.DisposeAsync().ConfigureAwait(false);
    }
}
