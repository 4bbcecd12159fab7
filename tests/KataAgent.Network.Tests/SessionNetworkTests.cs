using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using KataAgent.Testing;

namespace KataAgent.Network.Tests;

public sealed class SessionNetworkFixture : TestNetworkFixture
{
    public SessionNetworkFixture() : base("sess", "10.231.1.0/24", 41100, 41199) { }
}

/// <summary>Real bridge/host-local/portmap/firewall plugins, real iptables, real namespaces. Traffic: 127.0.0.1 and the session netns only.</summary>
public sealed class SessionNetworkTests : IClassFixture<SessionNetworkFixture>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);
    private readonly SessionNetworkFixture _fixture;
    private readonly Xunit.Abstractions.ITestOutputHelper _output;

    public SessionNetworkTests(SessionNetworkFixture fixture, Xunit.Abstractions.ITestOutputHelper output)
    {
        _fixture = fixture;
        _output = output;
    }

    [SkippableFact]
    public async Task Attach_publishes_a_port_on_host_loopback_and_detach_leaves_nothing()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        var network = _fixture.CreateNetwork();
        string id = TestNetworkFixture.NewSessionId();
        int hostPort = _fixture.Ports.Allocate(1)[0];
        LeakProbe probe;
        try
        {
            var attachment = await network.AttachAsync(id, [new PortMapping("127.0.0.1", hostPort, 2000)], cts.Token);
            probe = await LeakProbe.CaptureAsync(attachment);

            Assert.Equal(_fixture.NetnsPrefix + id, attachment.NetnsName);
            Assert.True(File.Exists(attachment.NetnsPath));
            Assert.Equal("eth0", attachment.InterfaceName);
            Assert.NotNull(attachment.Ip);
            Assert.True(IPNetwork.Parse(_fixture.Subnet).Contains(attachment.Ip!), $"{attachment.Ip} outside {_fixture.Subnet}");
            Assert.Contains(attachment.Ip!.ToString(), _fixture.AllocatedIps());
            Assert.NotNull(attachment.HostInterface);
            Assert.Contains(attachment.HostInterface!, Host.BridgePorts(_fixture.BridgeName));
            Assert.NotEmpty(probe.Chains); // portmap's CNI-DN-* chain for this container
            // portmap turns this on so that DNAT to the bridge works for 127.0.0.1.
            Assert.Equal("1", (await File.ReadAllTextAsync($"/proc/sys/net/ipv4/conf/{_fixture.BridgeName}/route_localnet")).Trim());

            using (var listener = await Echo.ListenInsideAsync(network.Namespaces, attachment.NetnsName, 2000))
            {
                var served = Echo.ServeOnceAsync(listener, cts.Token);
                string reply = await Echo.AskAsync(IPAddress.Loopback, hostPort, "ping", cts.Token);
                var peer = await served;
                Assert.StartsWith("pong ping", reply);
                // portmap's SNAT makes the session see the bridge address, not 127.0.0.1 (which it could not answer).
                Assert.Equal(IPAddress.Parse(attachment.Result.Ips[0].Gateway!), ((IPEndPoint)peer!).Address);
            }

            var stats = await network.GetStatisticsAsync(id, cts.Token);
            Assert.Equal("eth0", stats.Interface);
            Assert.True(stats.RxBytes > 0 && stats.TxBytes > 0, $"rx {stats.RxBytes} tx {stats.TxBytes}");

            await network.CheckAsync(id, cts.Token);
        }
        finally
        {
            await network.DetachAsync(id, CancellationToken.None);
            _fixture.Ports.Release([hostPort]);
        }
        await probe.AssertGoneAsync(_fixture);
        // Nothing answers on the published port any more.
        await Assert.ThrowsAnyAsync<SocketException>(() => Echo.AskAsync(IPAddress.Loopback, hostPort, "ping", cts.Token));
    }

    [SkippableFact]
    public async Task A_process_listening_in_the_netns_is_reachable_through_portmap()
    {
        Host.RequireTools();
        Skip.IfNot(File.Exists("/usr/bin/busybox") || File.Exists("/bin/busybox"), "needs busybox (Debian package busybox-static)");
        using var cts = new CancellationTokenSource(Timeout);
        var network = _fixture.CreateNetwork();
        string id = TestNetworkFixture.NewSessionId();
        int hostPort = _fixture.Ports.Allocate(1)[0];
        System.Diagnostics.Process? nc = null;
        try
        {
            var attachment = await network.AttachAsync(id, [new PortMapping("127.0.0.1", hostPort, 2001)], cts.Token);
            // The namespace is usable by iproute2 as well, as a runtime would use it.
            nc = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("ip", ["netns", "exec", attachment.NetnsName, "busybox", "nc", "-l", "-p", "2001", "-e", "echo", "hello-from-netns"])
            {
                UseShellExecute = false,
            })!;
            // nc needs a moment to listen; ask until it answers.
            string reply = await Eventually.WaitAsync(async () =>
                {
                    try
                    {
                        return await Echo.AskAsync(IPAddress.Loopback, hostPort, "hi", cts.Token);
                    }
                    catch (Exception e) when (e is SocketException or IOException)
                    {
                        return e.Message;
                    }
                },
                answer => answer.StartsWith("hello-from-netns", StringComparison.Ordinal),
                $"nc in the session netns to answer on 127.0.0.1:{hostPort}", cancellationToken: cts.Token);
            Assert.Equal("hello-from-netns", reply);
        }
        finally
        {
            if (nc is { HasExited: false })
                nc.Kill(entireProcessTree: true);
            nc?.Dispose();
            await network.DetachAsync(id, CancellationToken.None);
            _fixture.Ports.Release([hostPort]);
        }
    }

    [SkippableFact]
    public async Task Detach_is_idempotent_and_quiet_for_unknown_sessions()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        var network = _fixture.CreateNetwork();
        string id = TestNetworkFixture.NewSessionId();
        var attachment = await network.AttachAsync(id, [], cts.Token);
        var probe = await LeakProbe.CaptureAsync(attachment);

        Assert.True(await network.DetachAsync(id, cts.Token));
        Assert.False(await network.DetachAsync(id, cts.Token));
        Assert.False(await network.DetachAsync(TestNetworkFixture.NewSessionId(), cts.Token));
        await probe.AssertGoneAsync(_fixture);
    }

    [SkippableFact]
    public async Task Repeated_attach_and_detach_leaks_no_address()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout * 2);
        var network = _fixture.CreateNetwork();
        var before = _fixture.AllocatedIps().Count;
        for (int round = 0; round < 4; round++)
        {
            string id = TestNetworkFixture.NewSessionId();
            var ports = _fixture.Ports.Allocate(2);
            try
            {
                var stopwatch = System.Diagnostics.Stopwatch.StartNew();
                var attachment = await network.AttachAsync(id, [new("127.0.0.1", ports[0], 2000), new("127.0.0.1", ports[1], 2001)], cts.Token);
                var attachTime = stopwatch.Elapsed;
                Assert.Equal(before + 1, _fixture.AllocatedIps().Count);
                var probe = await LeakProbe.CaptureAsync(attachment);
                stopwatch.Restart();
                await network.DetachAsync(id, cts.Token);
                _output.WriteLine($"round {round}: attach {attachTime.TotalMilliseconds:0} ms, detach {stopwatch.Elapsed.TotalMilliseconds:0} ms");
                await probe.AssertGoneAsync(_fixture);
            }
            finally
            {
                await network.DetachAsync(id, CancellationToken.None);
                _fixture.Ports.Release(ports);
            }
            Assert.Equal(before, _fixture.AllocatedIps().Count);
        }
    }

    [SkippableFact]
    public async Task Concurrent_sessions_get_distinct_addresses_and_are_isolated_by_port()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout * 2);
        var network = _fixture.CreateNetwork();
        var ids = Enumerable.Range(0, 3).Select(_ => TestNetworkFixture.NewSessionId()).ToList();
        var ports = _fixture.Ports.Allocate(ids.Count);
        try
        {
            var attachments = await Task.WhenAll(ids.Select((id, i) => network.AttachAsync(id, [new("127.0.0.1", ports[i], 2000)], cts.Token)));
            Assert.Equal(ids.Count, attachments.Select(a => a.Ip!.ToString()).Distinct().Count());
            for (int i = 0; i < ids.Count; i++)
            {
                using var listener = await Echo.ListenInsideAsync(network.Namespaces, attachments[i].NetnsName, 2000);
                var served = Echo.ServeOnceAsync(listener, cts.Token);
                Assert.StartsWith($"pong to-{i}", await Echo.AskAsync(IPAddress.Loopback, ports[i], $"to-{i}", cts.Token));
                await served;
            }
        }
        finally
        {
            await Task.WhenAll(ids.Select(id => network.DetachAsync(id, CancellationToken.None)));
            _fixture.Ports.Release(ports);
        }
        Assert.Empty(_fixture.AllocatedIps());
    }

    [SkippableFact]
    public async Task A_restarted_agent_lists_and_detaches_what_the_previous_one_attached()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        string id = TestNetworkFixture.NewSessionId();
        int hostPort = _fixture.Ports.Allocate(1)[0];
        try
        {
            var attachment = await _fixture.CreateNetwork().AttachAsync(id, [new("127.0.0.1", hostPort, 2000)], cts.Token);
            var probe = await LeakProbe.CaptureAsync(attachment);

            // A new instance with different current settings: DEL must still use the config recorded at ADD.
            var restarted = new SessionNetwork(_fixture.Options(_fixture.Settings() with { PortMapSnat = false, Firewall = false }));
            var record = Assert.Single(await restarted.ListAsync(cts.Token), r => r.SessionId == id);
            Assert.Equal(SessionNetworkStatus.Attached, record.Status);
            Assert.Equal([new PortMapping("127.0.0.1", hostPort, 2000)], record.PortMappings);
            Assert.Equal(attachment.Ip, record.Attachment!.Ip);
            Assert.Equal(attachment.Ip, (await restarted.GetAsync(id, cts.Token))!.Ip);

            // Port pool rebuilt from what the sessions record.
            var pool = new HostPortPool(41100, 41199, (await restarted.ListAsync(cts.Token)).SelectMany(r => r.PortMappings).Select(p => p.HostPort));
            Assert.Contains(hostPort, pool.InUse);

            Assert.True(await restarted.DetachAsync(id, cts.Token));
            await probe.AssertGoneAsync(_fixture);
            // The firewall rules were removed although the new settings have no firewall plugin.
            Assert.DoesNotContain($"{attachment.Ip}/32", await Host.IptablesSaveAsync(), StringComparison.Ordinal);
        }
        finally
        {
            await _fixture.CreateNetwork().DetachAsync(id, CancellationToken.None);
            _fixture.Ports.Release([hostPort]);
        }
    }

    [SkippableFact]
    public async Task An_agent_that_died_mid_add_leaves_state_that_detach_cleans_up()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        var network = _fixture.CreateNetwork();
        string id = TestNetworkFixture.NewSessionId();
        int hostPort = _fixture.Ports.Allocate(1)[0];
        try
        {
            // Reproduce what a kill -9 after portmap's ADD leaves: netns, bridge+portmap done, firewall not, state incomplete.
            var settings = _fixture.Settings();
            var fullList = settings.BuildConfigList();
            var partialList = (JsonObject)fullList.DeepClone();
            ((JsonArray)partialList["plugins"]!).RemoveAt(2);
            string netnsName = network.NetnsNameOf(id);
            string netnsPath = await network.Namespaces.CreateAsync(netnsName, cts.Token);
            var state = new AttachmentState
            {
                SessionId = id,
                NetnsName = netnsName,
                NetnsPath = netnsPath,
                InterfaceName = "eth0",
                ConfigList = fullList,
                PortMappings = [new("127.0.0.1", hostPort, 2000)],
            };
            var result = await network.Cni.AddAsync(partialList, state.RuntimeConfig, cancellationToken: cts.Token);
            state.Result = result.Json;
            Directory.CreateDirectory(_fixture.StateDirectory);
            await File.WriteAllBytesAsync(Path.Combine(_fixture.StateDirectory, id + ".json"), state.Serialize(), cts.Token);
            var attachment = new NetworkAttachment(id, netnsName, netnsPath, "eth0", result.Ips, result.Interfaces[1].Name, state.PortMappings, result);
            var probe = await LeakProbe.CaptureAsync(attachment);
            Assert.NotEmpty(probe.Chains);

            var restarted = _fixture.CreateNetwork();
            var record = Assert.Single(await restarted.ListAsync(cts.Token), r => r.SessionId == id);
            Assert.Equal(SessionNetworkStatus.Incomplete, record.Status);
            Assert.Null(await restarted.GetAsync(id, cts.Token));
            Assert.True(await restarted.DetachAsync(id, cts.Token));
            await probe.AssertGoneAsync(_fixture);
        }
        finally
        {
            await network.DetachAsync(id, CancellationToken.None);
            _fixture.Ports.Release([hostPort]);
        }
    }

    [SkippableFact]
    public async Task A_namespace_without_state_is_listed_and_removed_by_detach()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        var network = _fixture.CreateNetwork();
        string id = TestNetworkFixture.NewSessionId();
        await network.Namespaces.CreateAsync(network.NetnsNameOf(id), cts.Token);

        var record = Assert.Single(await network.ListAsync(cts.Token), r => r.SessionId == id);
        Assert.Equal(SessionNetworkStatus.NamespaceOnly, record.Status);
        var e = await Assert.ThrowsAsync<SessionNetworkException>(() => network.AttachAsync(id, [], cts.Token));
        Assert.Contains("already exists", e.Message);

        Assert.True(await network.DetachAsync(id, cts.Token));
        Assert.False(network.Namespaces.Exists(network.NetnsNameOf(id)));
    }

    [SkippableFact]
    public async Task Attaching_twice_is_refused_and_leaves_the_first_attachment_intact()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        var network = _fixture.CreateNetwork();
        string id = TestNetworkFixture.NewSessionId();
        try
        {
            var first = await network.AttachAsync(id, [], cts.Token);
            var e = await Assert.ThrowsAsync<SessionNetworkException>(() => network.AttachAsync(id, [], cts.Token));
            Assert.Contains("already has a network attachment", e.Message);
            Assert.True(File.Exists(first.NetnsPath));
            Assert.Equal(first.Ip, (await network.GetAsync(id, cts.Token))!.Ip);
            await network.CheckAsync(id, cts.Token);
        }
        finally
        {
            await network.DetachAsync(id, CancellationToken.None);
        }
    }

    [SkippableFact]
    public async Task Check_reports_a_removed_interface()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        var network = _fixture.CreateNetwork();
        string id = TestNetworkFixture.NewSessionId();
        try
        {
            var attachment = await network.AttachAsync(id, [], cts.Token);
            // Deleting the veth from the host side removes eth0 in the namespace too.
            var deleted = await Host.RunAsync("ip", "link", "del", attachment.HostInterface!);
            Assert.Equal(0, deleted.Exit);
            var e = await Assert.ThrowsAsync<CniPluginException>(() => network.CheckAsync(id, cts.Token));
            Assert.Equal(CniCommand.Check, e.Command);
            Assert.Equal("bridge", e.Plugin);
        }
        finally
        {
            await network.DetachAsync(id, CancellationToken.None);
        }
        Assert.False(network.Namespaces.Exists(network.NetnsNameOf(id)));
    }

    [SkippableFact]
    public async Task Stale_rules_of_sessions_no_attachment_accounts_for_are_removed_and_live_ones_kept()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        var network = _fixture.CreateNetwork();
        string live = TestNetworkFixture.NewSessionId();
        string stale = TestNetworkFixture.NewSessionId();
        var ports = _fixture.Ports.Allocate(2);
        try
        {
            var liveAttachment = await network.AttachAsync(live, [new PortMapping("127.0.0.1", ports[0], 2000)], cts.Token);
            var staleAttachment = await network.AttachAsync(stale, [new PortMapping("127.0.0.1", ports[1], 2000)], cts.Token);
            var staleProbe = await LeakProbe.CaptureAsync(staleAttachment);
            var liveChains = LeakProbe.ChainsOf(await Host.IptablesSaveAsync(), live);
            Assert.NotEmpty(staleProbe.Chains);
            // What a portmap ADD that finished after its agent's clean-up leaves: rules no state file accounts for.
            File.Delete(Path.Combine(_fixture.StateDirectory, stale + ".json"));

            Assert.True(await network.RemoveStaleRulesAsync(new HashSet<string> { live }, cts.Token) >= 2);

            string save = await Host.IptablesSaveAsync();
            foreach (string chain in staleProbe.Chains)
                Assert.DoesNotContain($":{chain} ", save, StringComparison.Ordinal);
            Assert.DoesNotContain($"\\\"{stale}\\\"", save, StringComparison.Ordinal);
            Assert.Equal(liveChains, LeakProbe.ChainsOf(save, live));
            // The live session's published port still works.
            using var listener = await Echo.ListenInsideAsync(network.Namespaces, liveAttachment.NetnsName, 2000);
            var served = Echo.ServeOnceAsync(listener, cts.Token);
            Assert.StartsWith("pong ping", await Echo.AskAsync(System.Net.IPAddress.Loopback, ports[0], "ping", cts.Token));
            await served;
            // Nothing left to remove the second time.
            Assert.Equal(0, await network.RemoveStaleRulesAsync(new HashSet<string> { live }, cts.Token));
        }
        finally
        {
            await network.DetachAsync(live, CancellationToken.None);
            await network.DetachAsync(stale, CancellationToken.None);
            _fixture.Ports.Release(ports);
        }
    }

    [SkippableFact]
    public async Task Detach_removes_a_masquerade_chain_that_bridge_del_leaves_when_the_interface_is_gone()
    {
        Host.RequireTools();
        using var cts = new CancellationTokenSource(Timeout);
        var network = _fixture.CreateNetwork();
        string id = TestNetworkFixture.NewSessionId();
        string other = TestNetworkFixture.NewSessionId();
        // What bridge's ipMasq makes, in form only: the tests never masquerade, so these rules just ACCEPT
        // (a no-op in nat) for addresses of this test's subnet.
        string Comment(string session) => $"name: \"{_fixture.NetworkName}\" id: \"{session}\"";
        string Chain(string session) => "CNI-" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(session)))[..24];
        async Task FabricateAsync(string session, string ip)
        {
            Assert.Equal(0, (await Host.RunAsync("iptables", "-w", "-t", "nat", "-N", Chain(session))).Exit);
            Assert.Equal(0, (await Host.RunAsync("iptables", "-w", "-t", "nat", "-A", Chain(session), "-d", _fixture.Subnet, "-m", "comment", "--comment", Comment(session), "-j", "ACCEPT")).Exit);
            Assert.Equal(0, (await Host.RunAsync("iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", ip + "/32", "-m", "comment", "--comment", Comment(session), "-j", Chain(session))).Exit);
        }
        try
        {
            var attachment = await network.AttachAsync(id, [], cts.Token);
            await FabricateAsync(id, attachment.Ip!.ToString());
            await FabricateAsync(other, "10.231.1.250");
            Assert.Equal(0, (await Host.RunAsync("ip", "link", "del", attachment.HostInterface!)).Exit);

            Assert.True(await network.DetachAsync(id, cts.Token));
            string nat = (await Host.RunAsync("iptables-save", "-t", "nat")).Stdout;
            Assert.DoesNotContain(Chain(id), nat, StringComparison.Ordinal);
            Assert.DoesNotContain(id, nat, StringComparison.Ordinal);
            // Rules of another container are not touched.
            Assert.Contains($"-A POSTROUTING -s 10.231.1.250/32", nat, StringComparison.Ordinal);
            Assert.Contains($":{Chain(other)} ", nat, StringComparison.Ordinal);
        }
        finally
        {
            await network.DetachAsync(id, CancellationToken.None);
            await Host.RunAsync("iptables", "-w", "-t", "nat", "-D", "POSTROUTING", "-s", "10.231.1.250/32", "-m", "comment", "--comment", Comment(other), "-j", Chain(other));
            await Host.RunAsync("iptables", "-w", "-t", "nat", "-F", Chain(other));
            await Host.RunAsync("iptables", "-w", "-t", "nat", "-X", Chain(other));
        }
    }

    [SkippableFact]
    public async Task Invalid_session_ids_and_port_mappings_are_refused_before_anything_is_created()
    {
        Host.RequireTools();
        var network = _fixture.CreateNetwork();
        await Assert.ThrowsAsync<ArgumentException>(() => network.AttachAsync("../etc", []));
        await Assert.ThrowsAsync<ArgumentException>(() => network.AttachAsync("", []));
        await Assert.ThrowsAsync<ArgumentException>(() => network.AttachAsync(new string('a', 129), []));
        string id = TestNetworkFixture.NewSessionId();
        await Assert.ThrowsAsync<ArgumentException>(() => network.AttachAsync(id, [new("127.0.0.1", 0, 2000)]));
        await Assert.ThrowsAsync<ArgumentException>(() => network.AttachAsync(id, [new("127.0.0.1", 41150, 2000, "icmp")]));
        await Assert.ThrowsAsync<ArgumentException>(() => network.AttachAsync(id, [new("localhost", 41150, 2000)]));
        await Assert.ThrowsAsync<ArgumentException>(() => network.AttachAsync(id, [new("127.0.0.1", 41150, 2000), new("127.0.0.1", 41150, 2001)]));
        Assert.False(network.Namespaces.Exists(network.NetnsNameOf(id)));
        Assert.False(File.Exists(Path.Combine(_fixture.StateDirectory, id + ".json")));
    }
}
