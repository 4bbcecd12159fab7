using KataAgent.Core.Activity;
using KataAgent.Core.Sessions;

namespace KataAgent.Core;

/// <summary>
/// Idle counts service-port traffic (docs/END-REASONS.md, "Timeouts"): at each timeout check, a session with an idle
/// timeout whose published service ports (not the runner's replin/replout) saw a new connection or a packet since the
/// last check is touched.
/// </summary>
public sealed partial class Agent
{
    private readonly ServicePortTraffic _serviceTraffic = new();

    private async Task TouchSessionsWithServiceTrafficAsync(IReadOnlyList<Session> sessions, DateTimeOffset now, CancellationToken cancellationToken)
    {
        var owners = new Dictionary<int, Session>();
        foreach (var session in sessions)
        {
            if (session.Timeouts.Idle <= TimeSpan.Zero)
                continue;
            foreach (var port in session.Record.Ports.Where(p => p.Name is not ("replin" or "replout")))
                owners[port.HostPort] = session;
        }
        if (owners.Count == 0)
            return;
        foreach (var port in await _serviceTraffic.ActivePortsAsync(owners.Keys.ToHashSet(), cancellationToken).ConfigureAwait(false))
            owners[port].Touch(now);
    }
}
