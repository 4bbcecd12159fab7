using System.Collections;

namespace KataAgent.Core.Scratch;

/// <summary>A directory listing, sorted by name; <see cref="Truncated"/> when the directory held more than <see cref="Limit"/> entries.</summary>
public sealed class ScratchListing(IReadOnlyList<ScratchEntry> entries, bool truncated, int limit) : IReadOnlyList<ScratchEntry>
{
    /// <summary>True: reading stopped at <see cref="Limit"/>; the directory has more entries than listed.</summary>
    public bool Truncated { get; } = truncated;

    public int Limit { get; } = limit;

    public ScratchEntry this[int index] => entries[index];

    public int Count => entries.Count;

    public IEnumerator<ScratchEntry> GetEnumerator() => entries.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
