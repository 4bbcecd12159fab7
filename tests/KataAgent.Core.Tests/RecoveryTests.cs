using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Core.Tests;

public sealed class RecoveryAgentFixture : AgentFixture;

/// <summary>The agent goes away and comes back: its sessions are found again and keep working.</summary>
public sealed class RecoveryTests(RecoveryAgentFixture fixture) : IClassFixture<RecoveryAgentFixture>
{
    private static async Task<string> RunAsync(Agent agent, string kernelId, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var output = new System.Text.StringBuilder();
        await foreach (var e in agent.ExecuteAsync(kernelId, "r-" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
                           new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) }, timeout.Token))
        {
            if (e is OutputEvent { Item.Kind: "stdout" } o)
                output.Append(o.Item.Data);
        }
        return output.ToString();
    }

    [Fact]
    public async Task Sessions_survive_an_agent_restart_and_a_dead_one_is_cleaned()
    {
        var keep = await fixture.Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = "runc" });
        var dies = await fixture.Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = "gvisor" });
        Assert.Equal("", await RunAsync(fixture.Agent, keep.KernelId, "state = 'kept across restarts'"));
        var allocated = fixture.Agent.Resources.Used;

        await fixture.RestartAgentAsync();
        var agent = fixture.Agent;
        Assert.Equal(["kept across restarts\n"], [await RunAsync(agent, keep.KernelId, "print(state)")]);
        Assert.Equal(keep.Record.Ports, agent.GetSession(keep.KernelId).Record.Ports);
        Assert.Equal(allocated, agent.Resources.Used);
        Assert.Contains(keep.Record.ReplInPort, agent.Services.Ports.InUse);

        // While the agent (and its containerd) is away, one session dies with its shim; the next start cleans it up.
        await fixture.Agent.DisposeAsync();
        var shim = ProcessTable.All().Where(p => p.CommandLine.Contains("containerd-shim", StringComparison.Ordinal) &&
                                                 p.CommandLine.Contains(dies.KernelId, StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(shim);
        foreach (var (pid, _) in shim)
            ProcessTable.Kill(pid, 9);
        await fixture.RestartAgentAsync();
        agent = fixture.Agent;
        // Found dead by the new agent: a tombstone saying agent-lost, not "no session".
        Assert.Equal("agent-lost", Assert.Throws<SessionEndedException>(() => agent.GetSession(dies.KernelId)).Tombstone.EndReason.Name);
        Assert.Null(await agent.Containerd.Containers.FindAsync(dies.KernelId));
        Assert.False(Directory.Exists(dies.Record.ScratchDir));
        Assert.DoesNotContain(HostNetwork.NetnsNames(), n => dies.Record.NetnsPath.EndsWith("/" + n, StringComparison.Ordinal));
        Assert.Equal(["kept across restarts\n"], [await RunAsync(agent, keep.KernelId, "print(state)")]);

        await agent.DestroySessionAsync(keep.KernelId);
        var census = await LeakCensus.TakeAsync(agent.Containerd, fixture.DataDir);
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task A_port_mapping_no_session_owns_is_removed_at_start_and_live_sessions_keep_theirs()
    {
        var keep = await fixture.Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = "runc" });
        // What a portmap ADD that finished after its agent died leaves: a DNAT chain for a host port of this agent's
        // range, reached from CNI-HOSTPORT-DNAT by a rule tagged with this network and an id no session has.
        var staleId = "stale" + Guid.NewGuid().ToString("N")[..12];
        var chain = "CNI-DN-" + Guid.NewGuid().ToString("N")[..21];
        var port = fixture.Options.PortRangeEnd.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var comment = $"dnat name: \"{fixture.Options.NetworkName}\" id: \"{staleId}\"";
        await HostNetwork.RunAsync("iptables", "-w", "-t", "nat", "-N", "CNI-HOSTPORT-DNAT"); // exists once any session published a port
        await HostNetwork.RunCheckedAsync("iptables", "-w", "-t", "nat", "-N", chain);
        try
        {
            await HostNetwork.RunCheckedAsync("iptables", "-w", "-t", "nat", "-A", chain, "-d", "127.0.0.1/32", "-p", "tcp", "-m", "tcp", "--dport", port,
                "-j", "DNAT", "--to-destination", "10.201.0.250:2000");
            await HostNetwork.RunCheckedAsync("iptables", "-w", "-t", "nat", "-A", "CNI-HOSTPORT-DNAT", "-p", "tcp", "-m", "comment", "--comment", comment,
                "-m", "multiport", "--dports", port, "-j", chain);
            var keepChains = await HostNetwork.RulesMentioningAsync(keep.KernelId);
            Assert.NotEmpty(keepChains);

            await fixture.RestartAgentAsync();

            var nat = await HostNetwork.RunAsync("iptables-save", "-t", "nat");
            Assert.DoesNotContain(chain, nat, StringComparison.Ordinal);
            Assert.DoesNotContain(staleId, nat, StringComparison.Ordinal);
            Assert.Equal(keepChains, await HostNetwork.RulesMentioningAsync(keep.KernelId));
            Assert.Equal("kept\n", await RunAsync(fixture.Agent, keep.KernelId, "print('kept')"));
        }
        finally
        {
            await HostNetwork.RunAsync("iptables", "-w", "-t", "nat", "-D", "CNI-HOSTPORT-DNAT", "-p", "tcp", "-m", "comment", "--comment", comment,
                "-m", "multiport", "--dports", port, "-j", chain);
            await HostNetwork.RunAsync("iptables", "-w", "-t", "nat", "-F", chain);
            await HostNetwork.RunAsync("iptables", "-w", "-t", "nat", "-X", chain);
            await fixture.Agent.DestroySessionAsync(keep.KernelId);
        }
    }

    [Fact]
    public async Task A_session_known_only_from_its_label_gets_its_runner_key_back_from_the_config_dir()
    {
        var session = await fixture.Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = "runc" });
        try
        {
            Assert.Equal("", await RunAsync(fixture.Agent, session.KernelId, "state = 'from the label'"));
            // As if the agent had stopped between starting the container and storing the record.
            await fixture.Agent.DisposeAsync();
            var recordFile = Path.Combine(fixture.Options.StateDir, "sessions", session.KernelId + ".json");
            File.Delete(recordFile);

            await fixture.RestartAgentAsync();
            var recovered = fixture.Agent.GetSession(session.KernelId);
            Assert.Equal(session.Record.RunnerCurve!.RunnerPublicKey, recovered.Record.RunnerCurve!.RunnerPublicKey);
            Assert.Equal("from the label\n", await RunAsync(fixture.Agent, session.KernelId, "print(state)"));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(recordFile));
        }
        finally
        {
            await fixture.Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Exit_events_keep_coming_after_containerd_restarts()
    {
        var session = await fixture.Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = "runc" });
        try
        {
            await fixture.Agent.RestartContainerdAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
            using var subscription = fixture.Agent.Subscribe();
            var exited = Task.Run(async () =>
            {
                await foreach (var e in subscription.ReadAllAsync(timeout.Token))
                {
                    if (e.KernelId == session.KernelId && e.Kind == "exited")
                        return e;
                }
                throw new InvalidOperationException("no exit event");
            });
            // Kill the session's init from the host: only the event stream can tell the agent.
            var task = await fixture.Agent.Containerd.Tasks.GetAsync(session.Record.ContainerId);
            ProcessTable.Kill((int)task.Pid, 9);
            var e = await exited;
            Assert.Equal(137, e.ExitCode);
        }
        finally
        {
            await fixture.Agent.DestroySessionAsync(session.KernelId);
        }
    }
}
