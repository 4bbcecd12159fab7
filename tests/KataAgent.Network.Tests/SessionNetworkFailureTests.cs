using System.Diagnostics;
using System.Text.Json.Nodes;
using KataAgent.Testing;

namespace KataAgent.Network.Tests;

public sealed class FailureNetworkFixture : TestNetworkFixture
{
    public FailureNetworkFixture() : base("fail", "10.231.2.0/24", 41200, 41299) { }
}

/// <summary>A failed attach leaves nothing: no netns, veth, iptables chains or rules, IPAM allocation, state.</summary>
public sealed class SessionNetworkFailureTests : IClassFixture<FailureNetworkFixture>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);
    private readonly FailureNetworkFixture _fixture;

    public SessionNetworkFailureTests(FailureNetworkFixture fixture) => _fixture = fixture;

    /// <summary>
    /// Runs after the real bridge, portmap and firewall (so all of them have set things up), snapshots
    /// iptables for the test, then behaves per <paramref name="addBody"/> / <paramref name="delBody"/>.
    /// </summary>
    private static Task<string> WriteLastPluginAsync(string directory, string type, string addBody, string delBody = "exit 0") =>
        FakePlugins.WriteAsync(directory, type, $$"""
            if [ "$CNI_COMMAND" = ADD ]; then iptables-save > "$LOG/../iptables-at-add"; {{addBody}}; fi
            if [ "$CNI_COMMAND" = DEL ]; then {{delBody}}; fi
            exit 0
            """);

    /// <summary>What the chain had set up when the last plugin ran: read from its logged stdin and iptables snapshot.</summary>
    private async Task<LeakProbe> ProbeFromLogAsync(string pluginDirectory, string type, string sessionId)
    {
        string log = Path.Combine(pluginDirectory, "log");
        string addInput = Directory.EnumerateFiles(log, $"*-{type}-ADD-{sessionId}.json").Single();
        var config = JsonNode.Parse(await File.ReadAllTextAsync(addInput))!.AsObject();
        var result = CniResult.Parse(config["prevResult"]!.AsObject());
        string iptables = await File.ReadAllTextAsync(Path.Combine(pluginDirectory, "iptables-at-add"));
        var probe = new LeakProbe(sessionId, _fixture.NetnsPrefix + sessionId, result.Ips[0].Ip.ToString(),
            result.Interfaces.Single(i => i.Sandbox is null && i.Name != _fixture.BridgeName).Name,
            LeakProbe.ChainsOf(iptables, sessionId));
        // The snapshot proves the chain really had set things up before the failure.
        Assert.NotEmpty(probe.Chains);
        Assert.Contains($"{probe.Ip}/32", iptables, StringComparison.Ordinal); // firewall's rules
        return probe;
    }

    [SkippableFact]
    public async Task A_plugin_error_after_bridge_portmap_and_firewall_is_reported_and_undone()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        string plugins = _fixture.NewPluginDirectory();
        await WriteLastPluginAsync(plugins, "kt-fail",
            """echo '{"cniVersion":"1.0.0","code":7,"msg":"deliberate failure","details":"fake plugin says no"}'; exit 1""");
        var network = _fixture.CreateNetwork(_fixture.Settings(new JsonObject { ["type"] = "kt-fail" }), fakePluginDirectory: plugins);
        string id = TestNetworkFixture.NewSessionId();
        int hostPort = _fixture.Ports.Allocate(1)[0];
        try
        {
            var e = await Assert.ThrowsAsync<CniPluginException>(() => network.AttachAsync(id, [new("127.0.0.1", hostPort, 2000)], cts.Token));
            Assert.Equal("kt-fail", e.Plugin);
            Assert.Equal(CniCommand.Add, e.Command);
            Assert.Equal(7, e.Code);
            Assert.Equal("deliberate failure", e.CniMessage);
            Assert.Equal("fake plugin says no", e.Details);
            Assert.Contains("kt-fail", e.Message);
            Assert.Contains("deliberate failure", e.Message);

            var probe = await ProbeFromLogAsync(plugins, "kt-fail", id);
            await probe.AssertGoneAsync(_fixture);
            Assert.Empty(_fixture.AllocatedIps());
            // The undo ran DEL through the chain, giving the failed plugin the partial result as prevResult.
            string delInput = Directory.EnumerateFiles(Path.Combine(plugins, "log"), $"*-kt-fail-DEL-{id}.json").Single();
            var delConfig = JsonNode.Parse(await File.ReadAllTextAsync(delInput))!.AsObject();
            Assert.Equal(probe.Ip + "/24", (string?)delConfig["prevResult"]!["ips"]![0]!["address"]);
        }
        finally
        {
            await network.DetachAsync(id, CancellationToken.None);
            _fixture.Ports.Release([hostPort]);
        }
    }

    [SkippableFact]
    public async Task A_broken_bridge_config_fails_in_the_first_plugin_and_leaves_nothing()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        // "lo" exists and is not a bridge: the bridge plugin refuses it.
        var network = _fixture.CreateNetwork(_fixture.Settings() with { BridgeName = "lo" });
        string id = TestNetworkFixture.NewSessionId();
        var e = await Assert.ThrowsAsync<CniPluginException>(() => network.AttachAsync(id, [new("127.0.0.1", 41250, 2000)], cts.Token));
        Assert.Equal("bridge", e.Plugin);
        Assert.Contains("lo", e.Message);
        await new LeakProbe(id, network.NetnsNameOf(id), null, null, []).AssertGoneAsync(_fixture);
        Assert.Empty(_fixture.AllocatedIps());
    }

    [SkippableFact]
    public async Task A_missing_plugin_is_found_out_before_anything_is_created()
    {
        Host.RequireTools();
        var network = _fixture.CreateNetwork(_fixture.Settings(new JsonObject { ["type"] = "kt-not-installed" }), fakePluginDirectory: _fixture.NewPluginDirectory());
        string id = TestNetworkFixture.NewSessionId();
        var e = await Assert.ThrowsAsync<CniPluginNotFoundException>(() => network.AttachAsync(id, []));
        Assert.Equal("kt-not-installed", e.Plugin);
        Assert.Contains("/usr/lib/cni", e.Message);
        Assert.False(network.Namespaces.Exists(network.NetnsNameOf(id)));
        Assert.False(File.Exists(Path.Combine(_fixture.StateDirectory, id + ".json")));
    }

    [SkippableFact]
    public async Task A_hanging_plugin_is_killed_at_the_timeout_and_the_attach_undone()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        string plugins = _fixture.NewPluginDirectory();
        await WriteLastPluginAsync(plugins, "kt-hang", "sleep 7771");
        var network = _fixture.CreateNetwork(_fixture.Settings(new JsonObject { ["type"] = "kt-hang" }), pluginTimeout: TimeSpan.FromSeconds(5), fakePluginDirectory: plugins);
        string id = TestNetworkFixture.NewSessionId();
        try
        {
            var stopwatch = Stopwatch.StartNew();
            var e = await Assert.ThrowsAsync<CniPluginException>(() => network.AttachAsync(id, [new("127.0.0.1", 41251, 2000)], cts.Token));
            Assert.True(e.TimedOut);
            Assert.Equal("kt-hang", e.Plugin);
            Assert.Contains("timed out", e.Message);
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(100), $"took {stopwatch.Elapsed}");
            Assert.Empty(await Host.ProcessesStillRunningAsync("sleep", "7771"));
            await (await ProbeFromLogAsync(plugins, "kt-hang", id)).AssertGoneAsync(_fixture);
        }
        finally
        {
            await network.DetachAsync(id, CancellationToken.None);
        }
    }

    [SkippableFact]
    public async Task Cancelling_an_attach_undoes_it()
    {
        Host.RequireTools();
        string plugins = _fixture.NewPluginDirectory();
        await WriteLastPluginAsync(plugins, "kt-slow", """touch "$LOG/../started"; sleep 7772""");
        var network = _fixture.CreateNetwork(_fixture.Settings(new JsonObject { ["type"] = "kt-slow" }), fakePluginDirectory: plugins);
        string id = TestNetworkFixture.NewSessionId();
        try
        {
            using var cts = new CancellationTokenSource();
            var attach = network.AttachAsync(id, [new("127.0.0.1", 41252, 2000)], cts.Token);
            await Eventually.WaitAsync(() => File.Exists(Path.Combine(plugins, "started")), "the slow plugin to start", Timeout);
            await cts.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => attach);
            Assert.Empty(await Host.ProcessesStillRunningAsync("sleep", "7772"));
            await (await ProbeFromLogAsync(plugins, "kt-slow", id)).AssertGoneAsync(_fixture);
        }
        finally
        {
            await network.DetachAsync(id, CancellationToken.None);
        }
    }

    [SkippableFact]
    public async Task When_the_undo_fails_too_the_state_is_kept_and_a_later_detach_finishes_the_job()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        string plugins = _fixture.NewPluginDirectory();
        string broken = Path.Combine(plugins, "broken");
        await WriteLastPluginAsync(plugins, "kt-flaky",
            """echo '{"cniVersion":"1.0.0","code":11,"msg":"add failed"}'; exit 1""",
            $$"""if [ -e {{broken}} ]; then echo '{"cniVersion":"1.0.0","code":11,"msg":"del failed"}'; exit 1; fi""");
        await File.WriteAllTextAsync(broken, "", cts.Token);
        var network = _fixture.CreateNetwork(_fixture.Settings(new JsonObject { ["type"] = "kt-flaky" }), fakePluginDirectory: plugins);
        string id = TestNetworkFixture.NewSessionId();
        try
        {
            var e = await Assert.ThrowsAsync<SessionNetworkException>(() => network.AttachAsync(id, [new("127.0.0.1", 41253, 2000)], cts.Token));
            Assert.Contains("add failed", e.Message);
            Assert.Contains("del failed", e.Message);
            Assert.Contains("DetachAsync", e.Message);
            Assert.Equal(id, e.SessionId);

            var record = Assert.Single(await network.ListAsync(cts.Token), r => r.SessionId == id);
            Assert.Equal(SessionNetworkStatus.Incomplete, record.Status);
            await Assert.ThrowsAsync<CniPluginException>(() => network.DetachAsync(id, cts.Token));

            File.Delete(broken);
            Assert.True(await network.DetachAsync(id, cts.Token));
            await (await ProbeFromLogAsync(plugins, "kt-flaky", id)).AssertGoneAsync(_fixture);
        }
        finally
        {
            File.Delete(broken);
            await network.DetachAsync(id, CancellationToken.None);
        }
    }
}
