using KataAgent.BackendAi.Events;
using KataAgent.Core;
using KataAgent.Core.Registry;
using KataAgent.Core.Sessions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.BackendAi.Kernels;

/// <summary>
/// Turns Core's session events into the manager's kernel_terminated for kernels that end without a destroy_kernel:
/// a session that exits by itself (exit, signal, OOM kill, dead sandbox) is cleaned up as Backend.AI's agent does with a
/// dead container, then announced with its reason; one destroyed by someone else (the local API, reconciliation, a
/// timeout) is announced as it was destroyed.
/// </summary>
public sealed class KernelEvents : IAsyncDisposable
{
    private readonly Agent _agent;
    private readonly IEventProducer _events;
    private readonly KernelTerminations _terminations;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private SessionSubscription? _subscription;
    private Task? _pump;

    public KernelEvents(Agent agent, IEventProducer events, KernelTerminations terminations, ILogger? logger = null)
    {
        _agent = agent ?? throw new ArgumentNullException(nameof(agent));
        _events = events ?? throw new ArgumentNullException(nameof(events));
        _terminations = terminations ?? throw new ArgumentNullException(nameof(terminations));
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Subscribes before returning: every session event after this call is seen.</summary>
    public void Start()
    {
        if (_subscription is not null)
            throw new InvalidOperationException("kernel events already started");
        _subscription = _agent.Subscribe();
        _pump = Task.Run(() => PumpAsync(_subscription, _stop.Token), CancellationToken.None);
    }

    private async Task PumpAsync(SessionSubscription subscription, CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var e in subscription.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    await HandleAsync(e, cancellationToken).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    _logger.LogError(ex, "kernel event for {KernelId} ({Kind}) failed", e.KernelId, e.Kind);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task HandleAsync(SessionEvent e, CancellationToken cancellationToken)
    {
        switch (e.Kind)
        {
            case "exited":
                var live = _agent.Sessions.FirstOrDefault(s => s.KernelId == e.KernelId);
                // restart_kernel reaps the old task: while it runs that exit is no end, and once the new container
                // is registered the live session is running again (a late event about the old one).
                if (_terminations.IsRestarting(e.KernelId) || live is { State: not SessionState.Exited })
                    return;
                // A local session that exits is the local user's to inspect and destroy (the tombstone is looked up
                // when the live session is already gone).
                if (!BackendAiSessionLabels.IsManagers(live?.Record ?? _agent.FindEndedSession(e.KernelId)?.Record))
                    return;
                if (!_terminations.TryClaim(e.KernelId))
                    return;
                var sessionId = live?.Record.SessionId ?? e.KernelId;
                // The end reason is already set: the destroy keeps it.
                await _agent.DestroySessionAsync(e.KernelId, false, DestroyedBy.Manager, cancellationToken).ConfigureAwait(false);
                var ended = _agent.FindEndedSession(e.KernelId);
                await AnnounceAsync(e.KernelId, ended?.Record.SessionId ?? sessionId, ended?.EndReason ?? e.EndReason, ended?.ExitCode ?? e.ExitCode,
                    cancellationToken).ConfigureAwait(false);
                break;
            case "destroyed":
                var tombstone = _agent.FindEndedSession(e.KernelId);
                // Without a tombstone the owner is unknown: announcing a kernel the manager never had is harmless.
                if (tombstone is not null && !BackendAiSessionLabels.IsManagers(tombstone.Record))
                    return;
                if (!_terminations.TryClaim(e.KernelId))
                    return;
                await AnnounceAsync(e.KernelId, tombstone?.Record.SessionId ?? e.KernelId, e.EndReason ?? tombstone?.EndReason, e.ExitCode,
                    cancellationToken).ConfigureAwait(false);
                break;
        }
    }

    private Task AnnounceAsync(string kernelId, string sessionId, SessionEndReason? reason, int? exitCode, CancellationToken cancellationToken) =>
        _events.ProduceAsync("kernel_terminated",
            [kernelId, sessionId, KernelLifecycleReasons.FromEndReason(reason), (long)(exitCode ?? -1)], cancellationToken).AsTask();

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_pump is not null)
            await _pump.ConfigureAwait(false);
        _subscription?.Dispose();
        _stop.Dispose();
    }
}
