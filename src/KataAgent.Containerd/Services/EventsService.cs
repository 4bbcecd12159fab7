using Containerd.Services.Events.V1;
using Google.Protobuf;
using Grpc.Core;

namespace KataAgent.Containerd.Services;

/// <summary>One event from containerd's stream, decoded when its type is known (e.g. Containerd.Events.TaskExit).</summary>
public sealed record ContainerdEvent(DateTimeOffset Timestamp, string Namespace, string Topic, IMessage? Payload);

public sealed class EventsService(CallInvoker invoker)
{
    private readonly Events.EventsClient _client = new(invoker);

    /// <summary>Publishes an event into the namespace (used to confirm a subscription is live).</summary>
    public Task PublishAsync(string topic, Google.Protobuf.WellKnownTypes.Any payload, CancellationToken cancellationToken = default) =>
        Rpc.Call($"events.publish {topic}", async () =>
            await _client.PublishAsync(new PublishRequest { Topic = topic, Event = payload }, cancellationToken: cancellationToken));

    /// <param name="filters">e.g. <c>topic~="/tasks/"</c>, <c>namespace==kata-agent</c>.</param>
    public async IAsyncEnumerable<ContainerdEvent> SubscribeAsync(string[] filters,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = new SubscribeRequest();
        request.Filters.Add(filters);
        var call = _client.Subscribe(request, cancellationToken: cancellationToken);
        await foreach (var envelope in Rpc.Stream("events.subscribe", call, cancellationToken).ConfigureAwait(false))
        {
            var payload = envelope.Event is null ? null : TypeUrls.Unpack(envelope.Event);
            yield return new ContainerdEvent(envelope.Timestamp?.ToDateTimeOffset() ?? default, envelope.Namespace, envelope.Topic, payload);
        }
    }
}
