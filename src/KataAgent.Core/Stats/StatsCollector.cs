using System.Collections.Concurrent;
using KataAgent.Containerd;
using KataAgent.Core.Sessions;
using KataAgent.Network;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Stats;

/// <summary>
/// Samples every session periodically at low cost: one containerd Metrics call for all sessions' tasks (the shims
/// read the cgroup files), each session's interface counters from /proc/thread-self/net/dev inside its netns (a
/// thread enters the namespace; no process is spawned), and the host totals from /proc. Each session keeps a short
/// ring buffer of samples; histories of sessions that are gone are dropped.
/// </summary>
public sealed class StatsCollector : IAsyncDisposable
{
    private readonly ContainerdClient _containerd;
    private readonly SessionNetwork? _network;
    private readonly Func<IReadOnlyList<SessionRecord>> _sessions;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, SessionStatsHistory> _histories = new(StringComparer.Ordinal);
    private readonly HostStatsReader _host;
    private readonly object _gate = new();
    private CancellationTokenSource? _stop;
    private Task? _loop;
    private HostStats? _latestHost;

    public StatsCollector(ContainerdClient containerd, SessionNetwork? network, Func<IReadOnlyList<SessionRecord>> sessions,
        StatsOptions options, ILogger logger, HostStatsReader? host = null)
    {
        options.Validate();
        _containerd = containerd;
        _network = network;
        _sessions = sessions;
        Options = options;
        _logger = logger;
        _host = host ?? new HostStatsReader();
    }

    public StatsOptions Options { get; }

    /// <summary>Completed periodic collections (tests wait on it instead of on the clock).</summary>
    public long Collections => Interlocked.Read(ref _collections);
    private long _collections;

    public bool IsRunning
    {
        get { lock (_gate) return _loop is { IsCompleted: false }; }
    }

    /// <summary>Starts the periodic loop (idempotent); it ends when <paramref name="stopping"/> is cancelled or on dispose.</summary>
    public void Start(CancellationToken stopping)
    {
        lock (_gate)
        {
            if (_loop is not null)
                return;
            _stop = CancellationTokenSource.CreateLinkedTokenSource(stopping);
            var token = _stop.Token;
            _loop = Task.Run(() => RunAsync(token), CancellationToken.None);
        }
    }

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(Options.Interval);
        try
        {
            do
            {
                try
                {
                    await CollectAsync(cancellationToken).ConfigureAwait(false);
                    Interlocked.Increment(ref _collections);
                }
                catch (Exception e) when (e is not OperationCanceledException && !cancellationToken.IsCancellationRequested)
                {
                    _logger.LogWarning("stats collection failed: {Error}", e.Message);
                }
            }
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false));
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception e) when (cancellationToken.IsCancellationRequested)
        {
            // The agent is shutting down under us (its containerd client may be gone already).
            _logger.LogDebug("stats collection stopped: {Error}", e.Message);
        }
    }

    /// <summary>One collection: every session with a single Metrics call, then the host.</summary>
    public async Task CollectAsync(CancellationToken cancellationToken = default)
    {
        var sessions = _sessions();
        foreach (var stale in _histories.Keys.Except(sessions.Select(s => s.KernelId), StringComparer.Ordinal))
            _histories.TryRemove(stale, out _);
        if (sessions.Count > 0)
        {
            var metrics = await _containerd.Tasks.MetricsAsync(cancellationToken, sessions.Select(s => s.ContainerId).ToArray()).ConfigureAwait(false);
            var byContainer = metrics.GroupBy(m => m.ContainerId, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
            foreach (var record in sessions)
            {
                var counters = byContainer.TryGetValue(record.ContainerId, out var m) ? CgroupCounters.From(m) : CgroupCounters.None(DateTimeOffset.UtcNow);
                var network = await ReadNetworkAsync(record, cancellationToken).ConfigureAwait(false);
                HistoryOf(record.KernelId).Add(counters, network);
            }
        }
        var host = await _host.ReadAsync(sessions.Count, cancellationToken).ConfigureAwait(false);
        Volatile.Write(ref _latestHost, host);
    }

    /// <summary>A fresh sample of one session (also recorded in its history).</summary>
    public async Task<SessionStats> SampleAsync(SessionRecord record, CancellationToken cancellationToken = default)
    {
        var metrics = await _containerd.Tasks.MetricsAsync(cancellationToken, record.ContainerId).ConfigureAwait(false);
        var m = metrics.FirstOrDefault(x => x.ContainerId == record.ContainerId);
        var counters = m is null ? CgroupCounters.None(DateTimeOffset.UtcNow) : CgroupCounters.From(m);
        var network = await ReadNetworkAsync(record, cancellationToken).ConfigureAwait(false);
        return HistoryOf(record.KernelId).Add(counters, network);
    }

    /// <summary>The session's recent samples, oldest first (empty before its first sample).</summary>
    public IReadOnlyList<SessionStats> History(string kernelId) =>
        _histories.TryGetValue(kernelId, out var history) ? history.Snapshot() : [];

    /// <summary>The latest host sample; read now when the loop has not produced one yet.</summary>
    public HostStats Host(int sessions) => Volatile.Read(ref _latestHost) ?? _host.Read(sessions);

    public void Forget(string kernelId) => _histories.TryRemove(kernelId, out _);

    private SessionStatsHistory HistoryOf(string kernelId) =>
        _histories.GetOrAdd(kernelId, id => new SessionStatsHistory(id, Options.HistoryLength));

    private async Task<NetworkStats?> ReadNetworkAsync(SessionRecord record, CancellationToken cancellationToken)
    {
        if (_network is null || string.IsNullOrEmpty(record.NetnsPath))
            return null;
        try
        {
            var s = await _network.GetStatisticsAsync(record.ContainerId, cancellationToken).ConfigureAwait(false);
            return new NetworkStats(s.RxBytes, s.TxBytes, s.RxPackets, s.TxPackets);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // Detached (the session is being destroyed) or never attached: no network section.
            _logger.LogDebug("no network counters for session {KernelId}: {Error}", record.KernelId, e.Message);
            return null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        Task? loop;
        CancellationTokenSource? stop;
        lock (_gate)
        {
            loop = _loop;
            stop = _stop;
        }
        if (stop is not null)
            await stop.CancelAsync().ConfigureAwait(false);
        if (loop is not null)
            await loop.ConfigureAwait(false);
        stop?.Dispose();
    }
}
