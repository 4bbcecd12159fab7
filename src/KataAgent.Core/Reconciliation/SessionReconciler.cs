using KataAgent.Containerd;
using KataAgent.Core.Containers;
using KataAgent.Core.Registry;
using KataAgent.Core.Resources;
using KataAgent.Core.Runtime;
using KataAgent.Core.Scratch;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Reconciliation;

/// <summary>What reconciliation did in one round.</summary>
public sealed record ReconcileReport(IReadOnlyList<string> ReapedStrays, IReadOnlyList<string> CleanedVanished);

/// <summary>
/// Brings the registry and containerd into agreement: recovery at start-up, periodic reconciliation
/// (strays reaped, vanished sessions cleaned), exits missed while the event stream was down, and the
/// leftovers of an earlier, killed agent.
/// </summary>
internal sealed partial class SessionReconciler
{
    private readonly AgentOptions _options;
    private readonly SessionServices _services;
    private readonly SessionDestroyer _destroyer;
    private readonly SessionRegistry _registry;
    // Destroying a registered session is the agent's (it disposes, destroys, forgets and publishes).
    private readonly Func<string, CancellationToken, Task> _destroySession;
    private readonly ILogger _logger;

    public SessionReconciler(AgentOptions options, SessionServices services, SessionDestroyer destroyer, SessionRegistry registry,
        Func<string, CancellationToken, Task> destroySession, ILogger logger)
    {
        _options = options;
        _services = services;
        _destroyer = destroyer;
        _registry = registry;
        _destroySession = destroySession;
        _logger = logger;
    }

    private ContainerdClient Containerd => _services.Containerd;
    private RuntimeClassRegistry RuntimeClasses => _services.RuntimeClasses;

    /// <summary>Rebuilds sessions from their records (and container labels) after a restart.</summary>
    public async Task RecoverAsync(CancellationToken cancellationToken)
    {
        var records = (await _services.Store.LoadAllAsync(cancellationToken).ConfigureAwait(false)).ToDictionary(r => r.KernelId, StringComparer.Ordinal);
        foreach (var container in await Containerd.Containers.ListAsync(cancellationToken).ConfigureAwait(false))
        {
            // A claimed pool member's record file is under its kernel id, not its container id.
            if (SessionLabels.TryReadRecord(container.Labels, out var json) && !records.ContainsKey(container.Id) &&
                !records.Values.Any(r => r.ContainerId == container.Id && r.KernelId != r.ContainerId))
            {
                try
                {
                    var labelled = SessionRecord.FromJson(json);
                    records[labelled.KernelId] = WithRunnerKeysFromScratch(labelled);
                }
                catch (System.Text.Json.JsonException e)
                {
                    _logger.LogWarning("container {Id} carries an unreadable session record: {Message}", container.Id, e.Message);
                }
            }
        }
        // A claim that the agent did not finish leaves both records of one container: the claimed one stands.
        foreach (var unclaimed in records.Values.Where(r => r.KernelId == r.ContainerId &&
                     records.Values.Any(c => c.ContainerId == r.ContainerId && c.KernelId != c.ContainerId)).ToList())
        {
            _services.Store.Delete(unclaimed.KernelId);
            records.Remove(unclaimed.KernelId);
        }
        foreach (var record in records.Values)
        {
            if (record.Request?.Pool is { } pool && record.KernelId == record.ContainerId)
            {
                // An idle warm-pool member serves no one: reaped, the new agent's refiller makes fresh ones.
                _logger.LogInformation("reaping idle pool member {Id} of {Pool} left by an earlier agent", record.ContainerId, pool);
                await _destroyer.DestroyAsync(record, keepScratch: false, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
                continue;
            }
            if (await Containerd.Tasks.FindEndedAsync(record.ContainerId, cancellationToken).ConfigureAwait(false) is { } ended)
            {
                _logger.LogInformation("session {KernelId} did not survive; cleaning up", record.KernelId);
                await _destroyer.DestroyAsync(record, keepScratch: false, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
                // It ended while no agent watched: agent-lost, with the exit status containerd kept.
                _registry.AddEnded(new SessionTombstone(record, SessionEndReason.AgentLost(ended.Code, DateTimeOffset.UtcNow), ended.Code, false));
                continue;
            }
            _services.Ports.MarkInUse(record.Ports.Select(p => p.HostPort));
            _services.Resources.Restore(new ResourceAllocation(record.ContainerId, new ResourceSlots(record.Cpus, record.MemoryBytes),
                RuntimeClasses.Known(record.RuntimeClass).OverheadBytes)
            {
                CpuSet = record.CpuSet,
            });
            await _services.Store.SaveAsync(record, cancellationToken).ConfigureAwait(false);
#pragma warning disable CA2000 // the registry owns the session (and its runner client) from here on
            var session = new Session(record, NewRunnerClient(record));
#pragma warning restore CA2000
            // A session paused before the restart stays paused, and says so.
            if ((await Containerd.Tasks.FindAsync(record.ContainerId, cancellationToken).ConfigureAwait(false))?.Status
                is global::Containerd.V1.Types.Status.Paused or global::Containerd.V1.Types.Status.Pausing)
            {
                session.TrySetPaused(true);
            }
            session.Timeouts = SessionTimeouts.For(record.Request, _options);
            session.SandboxProcesses = Diagnostics.SandboxProcess.FindFor(_options.Namespace, record.ContainerId);
            _registry.Register(session);
            _services.LogRelays.Start(record.ContainerId, record.LogPath);
            _logger.LogInformation("recovered session {KernelId}", record.KernelId);
        }
        await ReconcileAsync(cancellationToken).ConfigureAwait(false);
        await CleanOrphansAsync(cancellationToken).ConfigureAwait(false);
    }

    private KernelRunnerClient NewRunnerClient(SessionRecord record) => new(new KernelRunnerClientOptions
    {
        InputPort = record.ReplInPort,
        OutputPort = record.ReplOutPort,
        Curve = record.RunnerCurve,
        MaxMessageSize = _options.RunnerMessageMaxBytes,
        SequencedOutput = Runs.RunnerSequencing.IsEnabled(_options.ScratchRoot, record.KernelId),
    });

    /// <summary>
    /// A record taken from a container label carries no keys (the agent stopped before it stored the
    /// record file): read the runner's key back from the session's config dir.
    /// </summary>
    private SessionRecord WithRunnerKeysFromScratch(SessionRecord record)
    {
        var keyFile = Path.Combine(ScratchDirectory.Open(_options.ScratchRoot, record.ContainerId).ConfigPath, ScratchDirectory.RunnerCurveKeyFile);
        if (record.RunnerCurve is not null || !File.Exists(keyFile))
            return record;
        return record with { RunnerCurve = RunnerCurveKeys.FromRunnerFile(File.ReadAllText(keyFile)) };
    }

    /// <summary>
    /// One round: containers in our namespace that no session owns are reaped; sessions whose
    /// container vanished are cleaned up. Live sessions are never touched.
    /// </summary>
    public async Task<ReconcileReport> ReconcileAsync(CancellationToken cancellationToken = default)
    {
        var reaped = new List<string>();
        var cleaned = new List<string>();
        var containers = await Containerd.Containers.ListAsync(cancellationToken).ConfigureAwait(false);
        var containerIds = containers.Select(c => c.Id).ToHashSet(StringComparer.Ordinal);
        foreach (var container in containers)
        {
            if (_registry.Contains(container.Id) || _registry.IsCreating(container.Id) ||
                _registry.Sessions.Any(s => s.Record.ContainerId == container.Id))
            {
                continue;
            }
            _logger.LogWarning("reaping stray container {Id}", container.Id);
            if (SessionLabels.TryReadRecord(container.Labels, out var json))
                await _destroyer.DestroyAsync(SessionRecord.FromJson(json), keepScratch: false, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
            else
                await TaskReaper.ReapContainerAsync(Containerd, container.Id, TaskReaper.SigKill, TimeSpan.Zero, _logger, cancellationToken).ConfigureAwait(false);
            reaped.Add(container.Id);
        }
        foreach (var session in _registry.Sessions)
        {
            if (containerIds.Contains(session.Record.ContainerId) || _registry.IsCreating(session.KernelId) || session.State >= SessionState.Destroying)
                continue;
            _logger.LogWarning("session {KernelId} lost its container; cleaning up", session.KernelId);
            await _destroySession(session.KernelId, cancellationToken).ConfigureAwait(false);
            cleaned.Add(session.KernelId);
        }
        foreach (var session in _registry.Sessions)
            await SessionLog.EnforceCapAsync(session.Record.LogPath, _options.SessionLogMaxBytes, cancellationToken).ConfigureAwait(false);
        return new ReconcileReport(reaped, cleaned);
    }

    /// <summary>Reconciles every <paramref name="interval"/> until cancelled; a failed round is logged, not fatal.</summary>
    public async Task RunLoopAsync(TimeSpan interval, CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(interval);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    await ReconcileAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    _logger.LogWarning(e, "reconciliation failed");
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>After the event stream broke, exits may have been missed: ask containerd directly.</summary>
    public async Task ReconcileAfterGapAsync(CancellationToken cancellationToken)
    {
        foreach (var session in _registry.Sessions.Where(s => s.State is SessionState.Running or SessionState.Paused))
        {
            if (await Containerd.Tasks.FindEndedAsync(session.Record.ContainerId, cancellationToken).ConfigureAwait(false) is { } ended)
            {
                var code = ended.Code;
                if (session.TryTransition(SessionState.Exited, code))
                {
                    var reason = session.SetEndReason(SessionEndReason.FromExitStatus(code, session.OutOfMemory, session.Record.MemoryBytes, DateTimeOffset.UtcNow));
                    _registry.Publish(new SessionEvent(session.KernelId, "exited", SessionState.Exited, code, DateTimeOffset.UtcNow,
                        $"{reason.Describe()}; seen after the event stream resumed", reason));
                }
            }
        }
    }
}
