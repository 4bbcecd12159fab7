using KataAgent.Runner.Protocol;

namespace KataAgent.Core.Commands;

/// <summary>
/// A session's commands: the running ones and the last <see cref="MaxEnded"/> that ended (with their exit and unread
/// output), so a background command's end can be asked for by id after it happened.
/// </summary>
internal sealed class SessionCommands
{
    public const int MaxEnded = 64;

    private readonly Lock _gate = new();
    private readonly Dictionary<string, Entry> _byId = new(StringComparer.Ordinal);
    private readonly Queue<string> _endedOrder = new();

    public sealed record Entry(RunnerCommand Command, string Display, DateTimeOffset StartedAt);

    public void Add(Entry entry)
    {
        lock (_gate)
        {
            _byId[entry.Command.Id] = entry;
        }
    }

    public void MarkEnded(string id)
    {
        lock (_gate)
        {
            _endedOrder.Enqueue(id);
            while (_endedOrder.Count > MaxEnded)
            {
                var forgotten = _endedOrder.Dequeue();
                if (_byId.TryGetValue(forgotten, out var entry) && entry.Command.Exited.IsCompleted)
                    _byId.Remove(forgotten);
            }
        }
    }

    public bool IsRunning(string id)
    {
        lock (_gate)
            return _byId.TryGetValue(id, out var entry) && !entry.Command.Exited.IsCompleted;
    }

    public Entry? Find(string id)
    {
        lock (_gate)
            return _byId.GetValueOrDefault(id);
    }

    public List<Entry> All()
    {
        lock (_gate)
            return [.. _byId.Values.OrderBy(entry => entry.StartedAt)];
    }
}
