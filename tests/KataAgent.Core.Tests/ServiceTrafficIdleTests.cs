using KataAgent.Core.Activity;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;

namespace KataAgent.Core.Tests;

public sealed class RuncServiceTrafficFixture : AgentFixture;
public sealed class GvisorServiceTrafficFixture : AgentFixture;

/// <summary>
/// Idle counts service-port traffic (docs/END-REASONS.md, "Timeouts"): a session serving HTTP on a published service
/// port stays alive past its idle timeout while a client on 127.0.0.1 keeps requesting, and ends idle-timeout once the
/// requests stop.
/// </summary>
public abstract class ServiceTrafficIdleTestsBase(AgentFixture fixture, string runtime)
{
    private static readonly TimeSpan Idle = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task Requests_on_a_service_port_keep_the_session_from_going_idle()
    {
        var agent = fixture.Agent;
        var session = await agent.CreateSessionAsync(new SessionRequest
        {
            Image = fixture.ImageName, RuntimeClass = runtime, IdleTimeout = Idle,
            ServicePorts = [new ServicePortDefinition("web", "http", [8080])],
        });
        try
        {
            using var events = new SessionEventLog(agent);
            var started = await session.Runner.StartServiceAsync(new ServiceDefinition
            {
                Name = "web", Command = ["python3", "-m", "http.server", "8080"], Ports = [8080], Protocol = "http",
            });
            Assert.True(started.Status == "started", $"service: {started.Status} {started.Error}");
            // The service start goes to the runner directly (no activity): on a loaded host create and start may take
            // most of the idle timeout, so an execute restarts the idle clock before the requests begin.
            await RunEvents.CollectAsync(agent.ExecuteAsync(session.KernelId, "warm", ExecutionMode.Query, "pass", null, CancellationToken.None));
            var port = session.Record.Ports.Single(p => p.Name == "web");
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
            var uri = new Uri($"http://127.0.0.1:{port.HostPort}/");
            // Well past the idle timeout, with nothing but requests on the service port.
            var until = DateTimeOffset.UtcNow + Idle * 2.5;
            var requests = 0;
            while (DateTimeOffset.UtcNow < until)
            {
                Assert.True(session.EndReason is null, $"ended while serving: {session.EndReason?.Describe()}");
                await http.GetStringAsync(uri);
                requests++;
                await Task.Delay(TimeSpan.FromSeconds(1));
            }
            Assert.True(requests > 10, $"only {requests} requests");
            Assert.Null(session.EndReason);
            Assert.Equal(SessionState.Running, session.State);
            var stoppedAt = DateTimeOffset.UtcNow;

            var destroyed = await events.WaitForAsync(session.KernelId, "destroyed", Idle * 6);
            Assert.Equal("idle-timeout", destroyed.EndReason?.Name);
            Assert.True(destroyed.At - stoppedAt >= Idle - TimeSpan.FromSeconds(3), $"ended {destroyed.At - stoppedAt} after the last request");
            Assert.Equal("idle-timeout", agent.FindEndedSession(session.KernelId)?.EndReason.Name);
        }
        finally
        {
            await agent.DestroySessionAsync(session.KernelId);
        }
    }
}

public sealed class RuncServiceTrafficIdleTests(RuncServiceTrafficFixture fixture)
    : ServiceTrafficIdleTestsBase(fixture, "runc"), IClassFixture<RuncServiceTrafficFixture>
{
}

public sealed class GvisorServiceTrafficIdleTests(GvisorServiceTrafficFixture fixture)
    : ServiceTrafficIdleTestsBase(fixture, "gvisor"), IClassFixture<GvisorServiceTrafficFixture>
{
}

/// <summary>The conntrack reading itself: new connections and refreshed ones count, a quiet one and other ports do not.</summary>
public sealed class ServicePortTrafficTests
{
    private static string Line(int timeout, int sport, int dport, string state = "ESTABLISHED") =>
        $"ipv4     2 tcp      6 {timeout} {state} src=127.0.0.1 dst=127.0.0.1 sport={sport} dport={dport} src=10.201.3.2 dst=10.201.3.1 sport=8080 dport={sport} [ASSURED] mark=0 zone=0 use=2";

    [Fact]
    public void New_and_refreshed_connections_count_quiet_ones_and_other_ports_do_not()
    {
        var ports = new HashSet<int> { 30001, 30002 };
        var t0 = DateTimeOffset.UnixEpoch;
        var (active, seen) = ServicePortTraffic.Compare(Line(431999, 40000, 30001) + "\n" + Line(431999, 40001, 29999), ports,
            new Dictionary<string, DateTimeOffset>(), t0);
        Assert.Equal([30001], active);

        // One second later: no packet (the timeout went down by one), a new connection on the other port.
        (active, seen) = ServicePortTraffic.Compare(Line(431998, 40000, 30001) + "\n" + Line(119, 40002, 30002, "TIME_WAIT"), ports, seen,
            t0 + TimeSpan.FromSeconds(1));
        Assert.Equal([30002], active);

        // Steady packets keep resetting the timeout: within the tolerance it reads as rounding, past it as traffic.
        (active, seen) = ServicePortTraffic.Compare(Line(431999, 40000, 30001), ports, seen, t0 + TimeSpan.FromSeconds(2));
        Assert.Empty(active);
        (active, _) = ServicePortTraffic.Compare(Line(431999, 40000, 30001) + "\nnot a conntrack line\n", ports, seen, t0 + TimeSpan.FromSeconds(4));
        Assert.Equal([30001], active);
    }
}
