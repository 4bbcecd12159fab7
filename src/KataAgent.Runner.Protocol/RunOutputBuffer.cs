using System.Text;
using System.Text.Json;

namespace KataAgent.Runner.Protocol;

/// <summary>The end of a collectable segment of a run: finished, clean-finished, build-finished or waiting-input.</summary>
internal sealed record RunBoundary(string Status, int? ExitCode, JsonElement? Options);

/// <summary>
/// Output of one run that has arrived but has not been collected yet, in arrival order, with the
/// boundaries (end messages) between segments.
/// Bounded: when more than <c>maxCharacters</c> of output wait, the oldest output is dropped and a
/// marker entry (stderr, "[kata-agent: N characters of output were dropped ...]") takes its place, so
/// a run nobody collects cannot grow memory without bound. Boundaries are never dropped; a media item
/// is dropped whole (part of an image is no use).
/// </summary>
internal sealed class RunOutputBuffer
{
    private readonly long _maxCharacters;
    private readonly LinkedList<Entry> _entries = new();
    private long _bufferedCharacters;
    private long _droppedWithoutSuccessor;

    public RunOutputBuffer(long maxCharacters)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCharacters, 1);
        _maxCharacters = maxCharacters;
    }

    public long BufferedCharacters => _bufferedCharacters;

    public bool HasBoundary => _entries.Any(entry => entry.Boundary is not null);

    public bool IsEmpty => _entries.Count == 0 && _droppedWithoutSuccessor == 0;

    public static string DroppedMarker(long count) =>
        $"[kata-agent: {count} characters of output were dropped because nobody collected them in time]\n";

    /// <param name="mime">The media type of a media item; null for every other kind.</param>
    public void AppendOutput(string kind, string text, string? mime = null)
    {
        if (text.Length == 0 && mime is null)
        {
            return;
        }
        Entry? last = _entries.Last?.Value;
        if (last is not null && last.Boundary is null && last.Kind == kind && IsStream(kind))
        {
            last.Add(text);
        }
        else
        {
            var entry = new Entry(kind, null, mime);
            entry.Add(text);
            Attach(entry);
        }
        _bufferedCharacters += text.Length;
        TrimToLimit();
    }

    public void AppendBoundary(RunBoundary boundary) => Attach(new Entry("", boundary, null));

    /// <summary>Takes everything up to and including the first boundary (or everything, if there is none).</summary>
    public (List<ConsoleItem> Items, RunBoundary? Boundary, long DroppedCharacters) Drain()
    {
        var items = new List<ConsoleItem>();
        long dropped = 0;
        while (_entries.First is { } node)
        {
            Entry entry = node.Value;
            _entries.RemoveFirst();
            if (entry.DroppedBefore > 0)
            {
                dropped += entry.DroppedBefore;
                items.Add(new ConsoleItem(RunnerMessageTypes.Stderr, DroppedMarker(entry.DroppedBefore)));
            }
            if (entry.Boundary is not null)
            {
                return (items, entry.Boundary, dropped);
            }
            string text = entry.TakeText();
            _bufferedCharacters -= text.Length;
            items.Add(new ConsoleItem(entry.Kind, text, entry.Mime));
        }
        if (_droppedWithoutSuccessor > 0)
        {
            dropped += _droppedWithoutSuccessor;
            items.Add(new ConsoleItem(RunnerMessageTypes.Stderr, DroppedMarker(_droppedWithoutSuccessor)));
            _droppedWithoutSuccessor = 0;
        }
        return (items, null, dropped);
    }

    /// <summary>Puts drained items back in front (a collector was cancelled before it could hand them out).</summary>
    public void Unread(IReadOnlyList<ConsoleItem> items)
    {
        for (int i = items.Count - 1; i >= 0; i--)
        {
            var entry = new Entry(items[i].Kind, null, items[i].Mime);
            entry.Add(items[i].Data);
            _entries.AddFirst(entry);
            _bufferedCharacters += items[i].Data.Length;
        }
        TrimToLimit();
    }

    private void Attach(Entry entry)
    {
        entry.DroppedBefore += _droppedWithoutSuccessor;
        _droppedWithoutSuccessor = 0;
        _entries.AddLast(entry);
    }

    private void TrimToLimit()
    {
        if (_bufferedCharacters <= _maxCharacters)
        {
            return;
        }
        // Trim a quarter below the limit, so that a steady stream trims rarely, not on every chunk.
        long excess = _bufferedCharacters - (_maxCharacters - (_maxCharacters / 4));
        LinkedListNode<Entry>? node = _entries.First;
        while (excess > 0 && node is not null)
        {
            LinkedListNode<Entry>? next = node.Next;
            Entry entry = node.Value;
            if (entry.Boundary is null)
            {
                long removed = entry.RemoveFront(IsStream(entry.Kind) ? excess : entry.Length);
                excess -= removed;
                _bufferedCharacters -= removed;
                if (entry.Length == 0)
                {
                    _entries.Remove(node);
                    long carried = entry.DroppedBefore + removed;
                    if (next is not null)
                    {
                        next.Value.DroppedBefore += carried;
                    }
                    else
                    {
                        _droppedWithoutSuccessor += carried;
                    }
                }
                else
                {
                    entry.DroppedBefore += removed;
                }
            }
            node = next;
        }
    }

    private static bool IsStream(string kind) => kind is RunnerMessageTypes.Stdout or RunnerMessageTypes.Stderr;

    /// <summary>Output kept as a queue of chunks: trimming the front is cheap, joining happens once at drain.</summary>
    private sealed class Entry(string kind, RunBoundary? boundary, string? mime)
    {
        private readonly Queue<string> _chunks = new();
        private int _firstChunkOffset;

        public string Kind { get; } = kind;
        public RunBoundary? Boundary { get; } = boundary;
        public string? Mime { get; } = mime;
        public long DroppedBefore { get; set; }
        public long Length { get; private set; }

        public void Add(string text)
        {
            _chunks.Enqueue(text);
            Length += text.Length;
        }

        public long RemoveFront(long count)
        {
            long removed = 0;
            while (removed < count && _chunks.Count > 0)
            {
                string first = _chunks.Peek();
                int available = first.Length - _firstChunkOffset;
                if (available <= count - removed)
                {
                    _chunks.Dequeue();
                    _firstChunkOffset = 0;
                    removed += available;
                    continue;
                }
                int cut = (int)(count - removed);
                // Never leave half of a surrogate pair at the front.
                if (char.IsLowSurrogate(first[_firstChunkOffset + cut]))
                {
                    cut++;
                }
                _firstChunkOffset += cut;
                removed += cut;
            }
            Length -= removed;
            return removed;
        }

        public string TakeText()
        {
            var text = new StringBuilder((int)Math.Min(Length, int.MaxValue));
            bool first = true;
            foreach (string chunk in _chunks)
            {
                text.Append(first ? chunk.AsSpan(_firstChunkOffset) : chunk);
                first = false;
            }
            _chunks.Clear();
            _firstChunkOffset = 0;
            Length = 0;
            return text.ToString();
        }
    }
}

/// <summary>Builds a console list, merging consecutive stdout (stderr) items.</summary>
internal sealed class ConsoleBuilder
{
    private readonly List<(string Kind, StringBuilder Text, string? Mime)> _items = [];

    public int Count => _items.Count;

    public long Characters { get; private set; }

    public void Add(ConsoleItem item)
    {
        Characters += item.Data.Length;
        if (_items.Count > 0 && _items[^1].Kind == item.Kind
            && item.Kind is RunnerMessageTypes.Stdout or RunnerMessageTypes.Stderr)
        {
            _items[^1].Text.Append(item.Data);
            return;
        }
        _items.Add((item.Kind, new StringBuilder(item.Data), item.Mime));
    }

    public void AddRange(IEnumerable<ConsoleItem> items)
    {
        foreach (ConsoleItem item in items)
        {
            Add(item);
        }
    }

    public List<ConsoleItem> Build() => _items.Select(item => new ConsoleItem(item.Kind, item.Text.ToString(), item.Mime)).ToList();
}
