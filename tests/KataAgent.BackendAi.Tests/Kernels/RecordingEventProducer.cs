using System.Collections.Concurrent;
using KataAgent.BackendAi.Events;
using KataAgent.Testing;

namespace KataAgent.BackendAi.Tests.Kernels;

/// <summary>Keeps every event produced, in order (the real producer writes them to Redis; that is tested elsewhere).</summary>
public sealed class RecordingEventProducer : IEventProducer
{
    private readonly ConcurrentQueue<(string Name, IReadOnlyList<object?> Args)> _events = new();

    public IReadOnlyList<(string Name, IReadOnlyList<object?> Args)> Events => _events.ToArray();

    public ValueTask ProduceAsync(string name, IReadOnlyList<object?> args, CancellationToken cancellationToken = default)
    {
        _events.Enqueue((name, args.ToArray()));
        return ValueTask.CompletedTask;
    }

    /// <summary>The events about one kernel or session (their first argument), in order.</summary>
    public IReadOnlyList<(string Name, IReadOnlyList<object?> Args)> About(string id) =>
        Events.Where(e => e.Args.Count > 0 && e.Args[0] is string first && first == id).ToList();

    public Task<(string Name, IReadOnlyList<object?> Args)> WaitForAsync(string name, string id, TimeSpan? timeout = null) =>
        Eventually.WaitAsync(() => About(id).FirstOrDefault(e => e.Name == name), e => e.Name is not null,
            $"event {name} about {id}", timeout);
}
