using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using KataAgent.Core.Sessions;
using KataAgent.Network.Isolation;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Core.Tests;

public sealed class IsolationRuncFixture : AgentFixture;
public sealed class IsolationGvisorFixture : AgentFixture;

/// <summary>
/// Attacks from inside real sessions against targets the test made: other sessions, host listeners, and responders
/// in a network namespace of the test's own (169.254.169.254, an RFC 1918 address, a documentation-range "public" one).
/// Each must fail, and the allowed paths must keep working. Runs one runtime at a time (the responder's addresses
/// are routes on the host).
/// </summary>
[Collection("network-isolation")]
public abstract class NetworkIsolationTestsBase(AgentFixture fixture, string runtime)
{
    private const string Metadata = "169.254.169.254";
    private const string Private = "10.254.254.1";
    private const string Public = "198.51.100.7";
    private const int ResponderPort = 7000;

    // Python helpers defined once in an attacker session (query mode keeps them).
    private const string AttackLibrary = """
        import socket, struct, os, time, threading, select
        def probe(host, port, send=b'', timeout=3):
            s = socket.socket(); s.settimeout(timeout)
            try:
                s.connect((host, port))
            except Exception as e:
                s.close(); return 'blocked:' + type(e).__name__
            try:
                if send: s.sendall(send)
                s.settimeout(2)
                try: data = s.recv(64)
                except Exception: data = b''
                return 'open:' + data.decode('latin-1').strip()
            finally:
                s.close()
        def probe_all(targets):
            out = {}
            ts = [threading.Thread(target=lambda t=t: out.__setitem__('%s:%d' % t[:2], probe(*t))) for t in targets]
            [t.start() for t in ts]; [t.join() for t in ts]
            return out
        def zmtp_code(code):
            greeting = b'\xff' + b'\0' * 8 + b'\x7f' + b'\x03\x00' + b'NULL' + b'\0' * 16 + b'\x00' + b'\0' * 31
            props = b'\x0bSocket-Type' + struct.pack('>I', 4) + b'PUSH'
            ready = b'\x05READY' + props
            frames = b'\x04' + bytes([len(ready)]) + ready
            frames += b'\x01' + bytes([4]) + b'code' + b'\x00' + bytes([len(code)]) + code
            return greeting + frames
        def mac_bytes(m): return bytes(int(x, 16) for x in m.split(':'))
        def ip_bytes(a): return socket.inet_aton(a)
        def csum(b):
            if len(b) % 2: b += b'\0'
            s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
            return (~s) & 0xffff
        def ipv4(src, dst, proto, payload):
            h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, ip_bytes(src), ip_bytes(dst))
            return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload
        def tcp_syn(src, dst, sport, dport):
            t = struct.pack('!HHIIBBHHH', sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0)
            pseudo = ip_bytes(src) + ip_bytes(dst) + struct.pack('!BBH', 0, 6, len(t))
            return t[:16] + struct.pack('!H', csum(pseudo + t)) + t[18:]
        def raw_socket():
            try:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind(('eth0', 0)); return s
            except Exception as e:
                return 'no-raw:' + type(e).__name__
        def gateway_mac(gw):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b'x', (gw, 9)); u.close(); time.sleep(0.5)
            for line in open('/proc/net/arp').read().splitlines()[1:]:
                f = line.split()
                if f[0] == gw: return f[3]
            return None
        """;

    protected AgentFixture Fixture { get; } = fixture;
    private Agent Agent => Fixture.Agent;

    private Task<Session> CreateAsync(EgressPolicy? egress = null, bool netRaw = false) =>
        Agent.CreateSessionAsync(new SessionRequest
        {
            Image = Fixture.ImageName,
            RuntimeClass = runtime,
            Egress = egress,
            AddCapabilities = netRaw ? ["CAP_NET_RAW"] : [],
        });

    private async Task<string> RunAsync(Session session, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        await foreach (var e in Agent.ExecuteAsync(session.KernelId, "r" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
            new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) }, timeout.Token))
        {
            if (e is OutputEvent o)
                (o.Item.Kind == "stdout" ? stdout : stderr).Append(o.Item.Data);
        }
        Assert.True(stderr.Length == 0 || !stderr.ToString().Contains("Traceback", StringComparison.Ordinal), $"the session's code failed:\n{stderr}");
        return stdout.ToString().Trim();
    }

    private async Task<(IPAddress Ip, string Mac, string Gateway)> AddressOfAsync(Session session)
    {
        var attachment = await Agent.Services.Network.GetAsync(session.KernelId) ?? throw new InvalidOperationException("no attachment");
        var mac = attachment.Result.Interfaces.First(i => !string.IsNullOrEmpty(i.Sandbox)).Mac!;
        var gateway = attachment.Addresses[0].Gateway?.ToString() ?? throw new InvalidOperationException("no gateway");
        return (attachment.Ip!, mac, gateway);
    }

    [Fact]
    public async Task Another_session_is_unreachable_at_L2_and_L3_and_its_runner_cannot_be_driven()
    {
        var victim = await CreateAsync(netRaw: true);
        var attacker = await CreateAsync(netRaw: true);
        try
        {
            var (victimIp, victimMac, gateway) = await AddressOfAsync(victim);
            var (attackerIp, attackerMac, _) = await AddressOfAsync(attacker);
            // The victim: a secret, a service on 8080, and (where raw sockets exist) a sniffer for frames from the attacker.
            Assert.Equal("ready", await RunAsync(victim, $$"""
                import socket, threading
                SECRET = 'victim-secret'
                srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(('0.0.0.0', 8080)); srv.listen(8)
                def serve():
                    while True:
                        c, _ = srv.accept(); c.sendall(b'victim-service\n'); c.close()
                threading.Thread(target=serve, daemon=True).start()
                seen = []
                def sniff():
                    try:
                        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind(('eth0', 0))
                    except Exception as e:
                        seen.append('no-raw'); return
                    while True:
                        f = s.recv(2048)
                        # Frames from the attacker's MAC (the L2 attack sends with its own), any protocol.
                        if f[6:12] == bytes(int(x, 16) for x in '{{attackerMac}}'.split(':')):
                            seen.append(f[12:14].hex())
                threading.Thread(target=sniff, daemon=True).start()
                print('ready')
                """));

            await RunAsync(attacker, AttackLibrary);
            // Control: the probe works where nothing is in the way (the attacker's own service, through loopback).
            Assert.StartsWith("open:", await RunAsync(attacker, "import socket\nsrv2 = socket.socket(); srv2.bind(('127.0.0.1', 9090)); srv2.listen(1)\nprint(probe('127.0.0.1', 9090))"), StringComparison.Ordinal);

            // TCP to the victim's runner (with a raw ZMTP `code` message) and to its service.
            var tcp = await RunAsync(attacker, $"""
                r = probe_all([('{victimIp}', 2000, zmtp_code(b"SECRET = 'stolen'; import os; os.system('touch /home/work/pwned')")), ('{victimIp}', 2001), ('{victimIp}', 8080)])
                print(sorted(r.items()))
                """);
            Assert.DoesNotContain("open:", tcp, StringComparison.Ordinal);
            Assert.Equal(3, CountOf(tcp, "blocked:"));

            // ICMP echo, spoofed ARP (claiming the victim's address) and IPv4/IPv6 frames straight to the victim's MAC.
            var l2 = await RunAsync(attacker, $$"""
                s = raw_socket()
                if isinstance(s, str):
                    print(s)
                else:
                    gw = mac_bytes(gateway_mac('{{gateway}}') or 'ff:ff:ff:ff:ff:ff'); me = mac_bytes('{{attackerMac}}'); victim = mac_bytes('{{victimMac}}')
                    icmp = struct.pack('!BBHHH', 8, 0, 0, 7, 1) + b'ping'
                    icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
                    arp = struct.pack('!HHBBH', 1, 0x0800, 6, 4, 2) + me + ip_bytes('{{victimIp}}') + b'\xff' * 6 + ip_bytes('{{victimIp}}')
                    udp = struct.pack('!HHHH', 5555, 5555, 12, 0) + b'hey!'
                    frames = [victim + me + b'\x08\x00' + ipv4('{{attackerIp}}', '{{victimIp}}', 1, icmp),
                              b'\xff' * 6 + me + b'\x08\x06' + arp, gw + me + b'\x08\x06' + arp,
                              victim + me + b'\x08\x00' + ipv4('{{attackerIp}}', '{{victimIp}}', 17, udp),
                              victim + me + b'\x86\xdd' + b'\x60' + b'\0' * 39]
                    for _ in range(3):
                        for f in frames: s.send(f)
                        time.sleep(0.2)
                    print('sent', len(frames) * 3)
                """);
            if (runtime == "runc")
                Assert.StartsWith("sent", l2, StringComparison.Ordinal); // a real attack: raw sockets exist on runc
            else
                Assert.True(l2.StartsWith("sent", StringComparison.Ordinal) || l2.StartsWith("no-raw", StringComparison.Ordinal), l2);
            await Task.Delay(1000);

            // Nothing reached the victim, its interpreter is untouched, and the host still maps its address to its MAC.
            var victimView = await RunAsync(victim, "import os\nprint(SECRET, os.path.exists('/home/work/pwned'), seen)");
            if (runtime == "runc")
                Assert.Equal("victim-secret False []", victimView); // the victim really listened at L2
            else
                Assert.True(victimView is "victim-secret False []" or "victim-secret False ['no-raw']", victimView);
            var neighbours = await HostNetwork.RunAsync("ip", "neigh", "show", victimIp.ToString());
            Assert.DoesNotContain(attackerMac, neighbours, StringComparison.OrdinalIgnoreCase);
            // IPv6 does not exist inside a session.
            Assert.Equal("1 0", await RunAsync(attacker, "import os\nprint(open('/proc/sys/net/ipv6/conf/all/disable_ipv6').read().strip() if os.path.exists('/proc/sys/net/ipv6/conf/all/disable_ipv6') else '1', len([l for l in open('/proc/net/if_inet6')] if os.path.exists('/proc/net/if_inet6') else []))"));
            // The agent's own path to the victim still works.
            Assert.Equal("victim-secret", await RunAsync(victim, "print(SECRET)"));
        }
        finally
        {
            await Agent.DestroySessionAsync(attacker.KernelId);
            await Agent.DestroySessionAsync(victim.KernelId);
        }
        await AssertNothingLeftAsync();
    }

    [Fact]
    public async Task The_host_is_unreachable_on_its_addresses_and_on_loopback_even_with_raw_frames()
    {
        using var anyListener = new TcpListener(IPAddress.Any, 0);
        using var loopbackListener = new TcpListener(IPAddress.Loopback, 0);
        anyListener.Start();
        loopbackListener.Start();
        var anyPort = ((IPEndPoint)anyListener.LocalEndpoint).Port;
        var loopbackPort = ((IPEndPoint)loopbackListener.LocalEndpoint).Port;
        var session = await CreateAsync(netRaw: true);
        try
        {
            var (ip, mac, gateway) = await AddressOfAsync(session);
            await RunAsync(session, AttackLibrary);
            var tcp = await RunAsync(session, $"print(sorted(probe_all([('{gateway}', {anyPort}), ('{gateway}', 22)]).items()))");
            Assert.Equal(2, CountOf(tcp, "blocked:"));

            // A SYN to 127.0.0.1 sent to the gateway's MAC: portmap's route_localnet would route it to the host's loopback.
            var raw = await RunAsync(session, $$"""
                s = raw_socket()
                if isinstance(s, str):
                    print(s)
                else:
                    gw = gateway_mac('{{gateway}}')
                    frame = mac_bytes(gw) + mac_bytes('{{mac}}') + b'\x08\x00' + ipv4('{{ip}}', '127.0.0.1', 6, tcp_syn('{{ip}}', '127.0.0.1', 40000, {{loopbackPort}}))
                    answers = 0; end = time.time() + 3
                    for _ in range(3): s.send(frame)
                    while time.time() < end:
                        r, _, _ = select.select([s], [], [], 0.2)
                        if r:
                            f = s.recv(2048)
                            if f[12:14] == b'\x08\x00' and f[23] == 6 and struct.unpack('!H', f[34:36])[0] == {{loopbackPort}}: answers += 1
                    print('answers', answers, 'gw', gw is not None)
                """);
            if (runtime == "runc")
                Assert.Equal("answers 0 gw True", raw);
            else
                Assert.True(raw is "answers 0 gw True" || raw.StartsWith("no-raw", StringComparison.Ordinal), raw);
            Assert.False(anyListener.Pending());
            Assert.False(loopbackListener.Pending());
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Egress_public_reaches_only_the_public_responder_and_none_reaches_nothing()
    {
        await using var responder = await Responder.StartAsync(Agent.Services.Network.Namespaces, Fixture.Index, [Metadata, Private, Public], ResponderPort);
        var open = await CreateAsync(EgressPolicy.Public);
        var closed = await CreateAsync(EgressPolicy.None);
        try
        {
            var targets = $"[('{Public}', {ResponderPort}), ('{Private}', {ResponderPort}), ('{Metadata}', {ResponderPort})]";
            await RunAsync(open, AttackLibrary);
            await RunAsync(closed, AttackLibrary);
            var fromOpen = await RunAsync(open, $"r = probe_all({targets})\nprint(r['{Public}:{ResponderPort}'], r['{Private}:{ResponderPort}'].split(':')[0], r['{Metadata}:{ResponderPort}'].split(':')[0])");
            Assert.Equal("open:hello blocked blocked", fromOpen);
            var fromClosed = await RunAsync(closed, $"r = probe_all({targets})\nprint(' '.join(v.split(':')[0] for k, v in sorted(r.items())))");
            Assert.Equal("blocked blocked blocked", fromClosed);
            Assert.Equal(1, responder.Accepted);
        }
        finally
        {
            await Agent.DestroySessionAsync(open.KernelId);
            await Agent.DestroySessionAsync(closed.KernelId);
        }
        await AssertNothingLeftAsync();
    }

    [Fact]
    public async Task Published_ports_still_answer_and_the_rules_go_with_the_session()
    {
        var session = await Agent.CreateSessionAsync(new SessionRequest
        {
            Image = Fixture.ImageName,
            RuntimeClass = runtime,
            ServicePorts = [new ServicePortDefinition("web", "http", [8080])],
        });
        try
        {
            var entries = await Agent.Services.Network.Guard!.ListEntriesAsync();
            var (ip, _, _) = await AddressOfAsync(session);
            Assert.Contains($"public:{ip}", entries);
            Assert.Contains(entries, e => e.StartsWith("sources:", StringComparison.Ordinal) && e.EndsWith(ip.ToString(), StringComparison.Ordinal));
            var started = await session.Runner.StartServiceAsync(new ServiceDefinition
            {
                Name = "web",
                Command = ["python3", "-m", "http.server", "8080"],
                Ports = [8080],
                Protocol = "http",
            });
            Assert.True(started.Status == "started", $"service: {started.Status} {started.Error}");
            var port = session.Record.Ports.Single(p => p.Name == "web");
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
            var page = await http.GetStringAsync($"http://{port.HostIp}:{port.HostPort}/");
            Assert.Contains("Directory listing", page, StringComparison.Ordinal);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
        Assert.Empty(await Agent.Services.Network.Guard!.ListEntriesAsync());
    }

    [Fact]
    public async Task The_walls_outlive_an_agent_restart_come_back_when_lost_and_go_with_a_dead_session()
    {
        var kept = await CreateAsync();
        // gVisor dies with its shim (a runc container would outlive it as an orphan).
        var dies = await Agent.CreateSessionAsync(new SessionRequest { Image = Fixture.ImageName, RuntimeClass = "gvisor" });
        var (keptIp, _, _) = await AddressOfAsync(kept);
        var (diesIp, _, _) = await AddressOfAsync(dies);
        Assert.Equal("", await RunAsync(kept, "state = 'kept'"));

        // The tables are lost (an operator flushed the ruleset): the next start builds them and walls the session in again.
        await Agent.Services.Network.Guard!.DeleteAsync();
        await Fixture.RestartAgentAsync();
        var entries = await Fixture.Agent.Services.Network.Guard!.ListEntriesAsync();
        Assert.Contains($"public:{keptIp}", entries);
        Assert.Contains($"public:{diesIp}", entries);
        Assert.Equal("kept", await RunAsync(kept, "print(state)"));

        // While the agent is away one session dies with its shim: the next start removes its elements with it.
        await Fixture.Agent.DisposeAsync();
        foreach (var (pid, _) in ProcessTable.All().Where(p => p.CommandLine.Contains("containerd-shim", StringComparison.Ordinal) &&
                     p.CommandLine.Contains(dies.KernelId, StringComparison.Ordinal)).ToList())
        {
            ProcessTable.Kill(pid, 9);
        }
        await Fixture.RestartAgentAsync();
        entries = await Agent.Services.Network.Guard!.ListEntriesAsync();
        Assert.DoesNotContain(entries, e => e.EndsWith(diesIp.ToString(), StringComparison.Ordinal));
        Assert.Contains($"public:{keptIp}", entries);
        Assert.Equal("kept", await RunAsync(kept, "print(state)"));

        await Agent.DestroySessionAsync(kept.KernelId);
        await AssertNothingLeftAsync();
    }

    private async Task AssertNothingLeftAsync()
    {
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(census.IsClean, census.ToString());
    }

    private static int CountOf(string text, string word)
    {
        var count = 0;
        for (var i = text.IndexOf(word, StringComparison.Ordinal); i >= 0; i = text.IndexOf(word, i + word.Length, StringComparison.Ordinal))
            count++;
        return count;
    }

    /// <summary>A network namespace of the test's own, holding the given addresses (routed to it from the host), answering "hello" on a port.</summary>
    private sealed class Responder : IAsyncDisposable
    {
        private readonly string _name;
        private readonly string[] _addresses;
        private readonly TcpListener _listener;
        private readonly CancellationTokenSource _stop = new();
        private int _accepted;

        private Responder(string name, string[] addresses, TcpListener listener)
        {
            _name = name;
            _addresses = addresses;
            _listener = listener;
            _ = AcceptLoopAsync();
        }

        public int Accepted => Volatile.Read(ref _accepted);
        private string HostEnd => _name + "h";

        public static async Task<Responder> StartAsync(Network.NetworkNamespaces namespaces, int index, string[] addresses, int port)
        {
            var name = "katr" + index.ToString(CultureInfo.InvariantCulture);
            var hostAddress = $"192.0.2.{index % 250 + 1}";
            await CleanAsync(name, addresses);
            await namespaces.CreateAsync(name);
            await Ip("link", "add", name + "h", "type", "veth", "peer", "name", name + "n");
            await Ip("link", "set", name + "n", "netns", name);
            await Ip("addr", "add", hostAddress + "/32", "dev", name + "h");
            await Ip("link", "set", name + "h", "up");
            foreach (var address in addresses)
            {
                await Ip("-n", name, "addr", "add", address + "/32", "dev", name + "n");
                await Ip("route", "add", address + "/32", "dev", name + "h");
            }
            await Ip("-n", name, "link", "set", "lo", "up");
            await Ip("-n", name, "link", "set", name + "n", "up");
            await Ip("-n", name, "route", "add", hostAddress + "/32", "dev", name + "n");
            await Ip("-n", name, "route", "add", "default", "via", hostAddress, "dev", name + "n");
            // A socket made inside the namespace stays there.
            var listener = await namespaces.RunInsideAsync(name, () =>
            {
                var l = new TcpListener(IPAddress.Any, port);
                l.Start();
                return l;
            });
            return new Responder(name, addresses, listener);
        }

        private async Task AcceptLoopAsync()
        {
            try
            {
                while (true)
                {
                    using var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                    Interlocked.Increment(ref _accepted);
                    await client.GetStream().WriteAsync("hello\n"u8.ToArray(), _stop.Token);
                }
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
            }
        }

        private static async Task CleanAsync(string name, string[] addresses)
        {
            foreach (var address in addresses)
                await HostNetwork.RunAsync("ip", "route", "del", address + "/32", "dev", name + "h");
            await HostNetwork.RunAsync("ip", "link", "del", name + "h");
            await HostNetwork.RunAsync("ip", "netns", "del", name);
        }

        private static Task Ip(params string[] args) => HostNetwork.RunCheckedAsync("ip", args);

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Stop();
            await CleanAsync(_name, _addresses);
            _stop.Dispose();
        }
    }
}

public sealed class RuncNetworkIsolationTests(IsolationRuncFixture fixture) : NetworkIsolationTestsBase(fixture, "runc"), IClassFixture<IsolationRuncFixture>;
public sealed class GvisorNetworkIsolationTests(IsolationGvisorFixture fixture) : NetworkIsolationTestsBase(fixture, "gvisor"), IClassFixture<IsolationGvisorFixture>;
