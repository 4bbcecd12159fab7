using System.Collections.Concurrent;
using KataAgent.Core.Sessions;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Registry;

/// <summary>
/// The sessions the agent knows, the kernel ids being created or restarted, and the lifecycle events
/// published to subscribers, and the tombstones of ended sessions (kept for <paramref name="endedRetention"/>, at most
/// <paramref name="endedMaxCount"/>, in memory only).
/// </summary>
internal sealed class SessionRegistry(ILogger logger, TimeSpan endedRetention, int endedMaxCount)
{
    private readonly ConcurrentDictionary<string, Session> _sessions = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, SessionTombstone> _ended = new(StringComparer.Ordinal);
    // Containers of sessions still being created: reconciliation must not mistake them for strays.
    private readonly ConcurrentDictionary<string, byte> _creating = new(StringComparer.Ordinal);
    private readonly List<SessionSubscription> _subscribers = [];

    /// <summary>The known sessions, in no particular order (a snapshot).</summary>
    public ICollection<Session> Sessions => _sessions.Values;

    /// <summary>The kernel ids of the known sessions (a snapshot).</summary>
    public ICollection<string> KernelIds => _sessions.Keys;

    public int Count => _sessions.Count;

    public bool Contains(string kernelId) => _sessions.ContainsKey(kernelId);

    public bool TryGet(string kernelId, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Session? session) =>
        _sessions.TryGetValue(kernelId, out session);

    /// <summary>The live session; an ended one still remembered throws <see cref="SessionEndedException"/> (saying how it ended).</summary>
    public Session Get(string kernelId)
    {
        if (_sessions.TryGetValue(kernelId, out var session))
            return session;
        if (FindEnded(kernelId) is { } tombstone)
            throw new SessionEndedException(tombstone);
        throw new SessionNotFoundException(kernelId);
    }

    /// <summary>The tombstone of an ended session within the retention, or null.</summary>
    public SessionTombstone? FindEnded(string kernelId)
    {
        PruneEnded();
        return _ended.TryGetValue(kernelId, out var tombstone) ? tombstone : null;
    }

    /// <summary>The tombstones within the retention, oldest end first.</summary>
    public IReadOnlyList<SessionTombstone> Ended
    {
        get
        {
            PruneEnded();
            return _ended.Values.OrderBy(t => t.EndReason.At).ToList();
        }
    }

    /// <summary>Remembers an ended session; the oldest go first past the count bound.</summary>
    public void AddEnded(SessionTombstone tombstone)
    {
        if (endedRetention <= TimeSpan.Zero || endedMaxCount <= 0)
            return;
        _ended[tombstone.KernelId] = tombstone;
        PruneEnded();
    }

    private void PruneEnded()
    {
        var cutoff = DateTimeOffset.UtcNow - endedRetention;
        foreach (var (kernelId, tombstone) in _ended)
        {
            if (tombstone.EndReason.At < cutoff)
                _ended.TryRemove(kernelId, out _);
        }
        var excess = _ended.Count - endedMaxCount;
        if (excess > 0)
        {
            foreach (var oldest in _ended.Values.OrderBy(t => t.EndReason.At).Take(excess).ToList())
                _ended.TryRemove(oldest.KernelId, out _);
        }
    }

    /// <summary>Marks a kernel id as being created or restarted; false when it already is.</summary>
    public bool TryBeginCreating(string kernelId) => _creating.TryAdd(kernelId, 0);

    public void EndCreating(string kernelId) => _creating.TryRemove(kernelId, out _);

    public bool IsCreating(string kernelId) => _creating.ContainsKey(kernelId);

    /// <summary>
    /// Makes a session known, and turns what goes wrong on its runner channel (a run cut short by a lost
    /// connection or an oversized message, a failure on the client's thread) into a log line and an event.
    /// </summary>
    public void Register(Session session)
    {
        var kernelId = session.KernelId;
        session.Runner.Faulted += reason =>
        {
            logger.LogWarning("session {KernelId}: {Reason}", kernelId, reason);
            Publish(new SessionEvent(kernelId, "run-error", session.State, null, DateTimeOffset.UtcNow, reason));
        };
        _sessions[kernelId] = session;
        // A new session under an ended one's id replaces its tombstone.
        _ended.TryRemove(kernelId, out _);
    }

    public void Remove(string kernelId) => _sessions.TryRemove(kernelId, out _);

    public void Publish(SessionEvent e)
    {
        lock (_subscribers)
        {
            foreach (var subscriber in _subscribers)
                subscriber.Offer(e);
        }
    }

    /// <summary>
    /// A subscription to lifecycle events, registered before this returns: every event published after
    /// the call reaches it, until it is disposed.
    /// </summary>
    public SessionSubscription Subscribe()
    {
        var subscription = new SessionSubscription(Unsubscribe);
        lock (_subscribers)
            _subscribers.Add(subscription);
        return subscription;
    }

    private void Unsubscribe(SessionSubscription subscription)
    {
        lock (_subscribers)
            _subscribers.Remove(subscription);
    }
}
