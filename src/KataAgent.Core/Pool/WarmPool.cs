using KataAgent.Core.Sessions;

namespace KataAgent.Core.Pool;

/// <summary>
/// The idle members of one pool and its counters. A member leaves the idle list exactly once (claimed, evicted or
/// discarded), under the lock: two claims can never take the same one.
/// </summary>
internal sealed class WarmPool(PoolSpec spec)
{
    private readonly object _gate = new();
    private readonly List<Session> _idle = [];
    private int _filling;
    private long _claims;
    private long _misses;
    private long _refills;
    private long _refillFailures;
    private long _evictions;
    private long _discarded;
    private TimeSpan _refillTotal;
    private TimeSpan? _lastRefill;
    private string? _lastError;

    public PoolSpec Spec { get; } = spec;

    public int Idle
    {
        get { lock (_gate) return _idle.Count; }
    }

    public int Filling
    {
        get { lock (_gate) return _filling; }
    }

    /// <summary>How many more members the refiller should start now (the minimum first, then the target).</summary>
    public int Wanted
    {
        get
        {
            lock (_gate)
                return Math.Max(0, Math.Min(Spec.EffectiveTarget, Spec.Max) - _idle.Count - _filling);
        }
    }

    public bool BelowMin
    {
        get { lock (_gate) return _idle.Count + _filling < Spec.Min; }
    }

    public void BeginFill()
    {
        lock (_gate)
            _filling++;
    }

    public void EndFill(Session? member, TimeSpan took, string? error)
    {
        lock (_gate)
        {
            _filling--;
            if (member is not null)
            {
                _idle.Add(member);
                _refills++;
                _refillTotal += took;
                _lastRefill = took;
            }
            else
            {
                _refillFailures++;
                _lastError = error;
            }
        }
    }

    /// <summary>Takes the oldest idle member for a claim; false (a miss) when there is none.</summary>
    public bool TryClaim([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Session? member)
    {
        lock (_gate)
        {
            if (_idle.Count == 0)
            {
                _misses++;
                member = null;
                return false;
            }
            member = _idle[0];
            _idle.RemoveAt(0);
            return true;
        }
    }

    public void CountClaim()
    {
        lock (_gate)
            _claims++;
    }

    /// <summary>A claimed member that turned out dead or refused personalisation: it goes, and a claim retries.</summary>
    public void CountDiscarded(string why)
    {
        lock (_gate)
        {
            _discarded++;
            _lastError = why;
        }
    }

    /// <summary>Takes the newest idle member to make room for a real request.</summary>
    public bool TryEvict([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Session? member)
    {
        lock (_gate)
        {
            if (_idle.Count == 0)
            {
                member = null;
                return false;
            }
            member = _idle[^1];
            _idle.RemoveAt(_idle.Count - 1);
            _evictions++;
            return true;
        }
    }

    /// <summary>Removes the member with this container id (its task died while idle); null when it is not idle here.</summary>
    public Session? TryRemove(string containerId)
    {
        lock (_gate)
        {
            var index = _idle.FindIndex(m => m.Record.ContainerId == containerId);
            if (index < 0)
                return null;
            var member = _idle[index];
            _idle.RemoveAt(index);
            _discarded++;
            _lastError = $"member {containerId} died while idle";
            return member;
        }
    }

    /// <summary>Every idle member, taken out (agent stop).</summary>
    public List<Session> TakeAll()
    {
        lock (_gate)
        {
            var all = _idle.ToList();
            _idle.Clear();
            return all;
        }
    }

    public PoolStatus Status()
    {
        lock (_gate)
        {
            return new PoolStatus(Spec.Key, Spec, _idle.Count, _filling, _claims, _misses, _refills, _refillFailures, _evictions, _discarded,
                _lastRefill, _refills > 0 ? _refillTotal / _refills : null, _lastError)
            {
                IdleMembers = _idle.Select(m => m.Record.ContainerId).ToList(),
            };
        }
    }
}
