using KataAgent.Core.Sessions;
using KataAgent.Core.Stats;

namespace KataAgent.Core;

/// <summary>Per-session resource usage and host totals (Stats/).</summary>
public sealed partial class Agent
{
    private readonly object _statsGate = new();
    private StatsCollector? _statsCollector;
    private StatsOptions _statsOptions = new();

    /// <summary>Sampling interval and history length. Takes effect only before the collector starts (first stats call).</summary>
    public StatsOptions StatsOptions
    {
        get => _statsOptions;
        set
        {
            value.Validate();
            lock (_statsGate)
            {
                if (_statsCollector is not null)
                    throw new InvalidOperationException("the stats collector is already running: set StatsOptions before the first stats call");
                _statsOptions = value;
            }
        }
    }

    /// <summary>The periodic collector; started on first use and stopped when the agent stops.</summary>
    public StatsCollector StatsCollector
    {
        get
        {
            lock (_statsGate)
            {
                if (_statsCollector is null)
                {
                    _statsCollector = new StatsCollector(Containerd, Services.Network, StatsSessions, _statsOptions, _logger);
                    _statsCollector.Start(_stop.Token);
                }
                return _statsCollector;
            }
        }
    }

    /// <summary>A fresh sample of the session (CPU utilisation is against its previous sample); it joins the history.</summary>
    public Task<SessionStats> GetStatsAsync(string kernelId, CancellationToken cancellationToken = default) =>
        StatsCollector.SampleAsync(GetSession(kernelId).Record, cancellationToken);

    /// <summary>The session's recent samples, oldest first, at most <see cref="StatsOptions.HistoryLength"/>.</summary>
    public IReadOnlyList<SessionStats> GetStatsHistory(string kernelId)
    {
        var session = GetSession(kernelId);
        return StatsCollector.History(session.KernelId);
    }

    /// <summary>The latest host totals (from the collector; read from /proc when it has none yet).</summary>
    public HostStats HostStats => StatsCollector.Host(_registry.Count);

    private IReadOnlyList<SessionRecord> StatsSessions() =>
        _registry.Sessions.Where(s => s.State is SessionState.Running or SessionState.Paused or SessionState.Exited).Select(s => s.Record).ToList();

    /// <summary>Hook for <see cref="DisposeAsync"/>: waits for the collector loop to end (it also ends by itself on shutdown).</summary>
    internal async ValueTask StopStatsAsync()
    {
        StatsCollector? collector;
        lock (_statsGate)
            collector = _statsCollector;
        if (collector is not null)
            await collector.DisposeAsync().ConfigureAwait(false);
    }
}
