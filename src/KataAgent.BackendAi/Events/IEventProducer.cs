namespace KataAgent.BackendAi.Events;

/// <summary>
/// Sends one anycast event to the manager (BA25: Redis stream <c>events</c> in db 4, fields name / source / args).
/// The args are the event's positional tuple, packed with the Backend.AI codec.
/// </summary>
public interface IEventProducer
{
    ValueTask ProduceAsync(string name, IReadOnlyList<object?> args, CancellationToken cancellationToken = default);
}
