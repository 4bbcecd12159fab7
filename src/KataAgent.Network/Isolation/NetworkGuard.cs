using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace KataAgent.Network.Isolation;

/// <summary>What a session may reach beyond its own published ports.</summary>
public enum EgressPolicy
{
    /// <summary>The public internet only: no host, LAN, link-local/metadata, loopback, multicast or denied ranges.</summary>
    Public,
    /// <summary>No egress at all.</summary>
    None,
}

/// <summary>One session as the guard knows it: its bridge port (host veth), MAC and address, and its egress policy.</summary>
public sealed record GuardEntry(string HostInterface, string Mac, IPAddress Ip, EgressPolicy Egress)
{
    public override string ToString() => $"{HostInterface} {Mac} {Ip} egress={Egress.ToString().ToLowerInvariant()}";
}

public sealed record NetworkGuardOptions
{
    public required string BridgeName { get; init; }
    /// <summary>The sessions' subnet (CIDR); always denied as an egress destination (sessions never reach each other).</summary>
    public required string Subnet { get; init; }
    /// <summary>Resolvers sessions are given: reachable on port 53 under <see cref="EgressPolicy.Public"/> even at private addresses.</summary>
    public IReadOnlyList<IPAddress> Resolvers { get; init; } = [];
    /// <summary>Destinations refused under <see cref="EgressPolicy.Public"/> besides the built-in non-public ranges.</summary>
    public IReadOnlyList<string> DenyCidrs { get; init; } = [];
    public string NftPath { get; init; } = "nft";
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// The host-side walls around every session on one agent bridge, as two nftables tables named after the bridge
/// (an inet one for L3, a bridge one for L2). The rules are static; sessions are elements of sets, so admitting or
/// removing a session is one atomic `nft -f` of set elements and a restart keeps them (the kernel holds the tables).
/// Each rule and why it exists is in DESIGN.md, "Network isolation".
/// </summary>
public sealed partial class NetworkGuard
{
    /// <summary>Never public destinations (RFC 6890 special-purpose ranges a session has no business reaching).</summary>
    public static readonly IReadOnlyList<string> NonPublicRanges =
    [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
    ];

    private readonly NetworkGuardOptions _options;

    public NetworkGuard(NetworkGuardOptions options)
    {
        _options = options;
        if (!BridgeNamePattern().IsMatch(options.BridgeName))
            throw new ArgumentException($"bridge name '{options.BridgeName}' cannot name an nftables table", nameof(options));
        foreach (var cidr in options.DenyCidrs.Append(options.Subnet))
            ParseCidr(cidr);
        TableName = "kata_agent_" + options.BridgeName.Replace('-', '_').Replace('.', '_');
    }

    /// <summary>The name of both tables (inet and bridge family).</summary>
    public string TableName { get; }

    /// <summary>
    /// Creates or refreshes the tables: chains and rules are replaced, the deny and resolver sets refilled from the
    /// options and the host's current addresses; the session sets keep their elements. One atomic transaction.
    /// </summary>
    public Task EnsureAsync(CancellationToken cancellationToken = default) => RunAsync(BuildRuleset(HostAddresses()), cancellationToken);

    internal string BuildRuleset(IEnumerable<IPAddress> hostAddresses)
    {
        var bridge = Quote(_options.BridgeName);
        var denied = NonPublicRanges.Concat(_options.DenyCidrs).Append(_options.Subnet)
            .Concat(hostAddresses.Where(a => a.AddressFamily == AddressFamily.InterNetwork).Select(a => a + "/32"))
            .Select(c => ParseCidr(c).ToString()).Distinct(StringComparer.Ordinal).ToList();
        var resolvers = _options.Resolvers.Where(a => a.AddressFamily == AddressFamily.InterNetwork).Select(a => a.ToString()).Distinct().ToList();
        var t = TableName;
        var sb = new StringBuilder();
        // `add` is idempotent for tables, sets and chains; rules are flushed and written anew.
        sb.AppendLine(CultureInfo.InvariantCulture, $"add table inet {t}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add set inet {t} public {{ type ipv4_addr; }}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add set inet {t} resolvers {{ type ipv4_addr; }}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add set inet {t} denied {{ type ipv4_addr; flags interval; auto-merge; }}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"flush set inet {t} resolvers");
        sb.AppendLine(CultureInfo.InvariantCulture, $"flush set inet {t} denied");
        if (resolvers.Count > 0)
            sb.AppendLine(CultureInfo.InvariantCulture, $"add element inet {t} resolvers {{ {string.Join(", ", resolvers)} }}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add element inet {t} denied {{ {string.Join(", ", denied)} }}");
        // An earlier layout had a raw-priority "prerouting" chain (before conntrack, keyed on the bridge): remove it.
        sb.AppendLine(CultureInfo.InvariantCulture, $"add chain inet {t} prerouting {{ type filter hook prerouting priority -300; policy accept; }}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"flush chain inet {t} prerouting");
        sb.AppendLine(CultureInfo.InvariantCulture, $"delete chain inet {t} prerouting");
        foreach (var (chain, hook, priority) in new[] { ("localnet", "prerouting", -150), ("input", "input", -10), ("forward", "forward", -10) })
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"add chain inet {t} {chain} {{ type filter hook {hook} priority {priority}; policy accept; }}");
            sb.AppendLine(CultureInfo.InvariantCulture, $"flush chain inet {t} {chain}");
        }
        // route_localnet (set by portmap for 127.0.0.1 publishing) lets a session reach host services bound to loopback.
        // Before routing (after conntrack, before DNAT), nothing new from a session may head for 127/8; replies on the
        // host's own 127.0.0.1 -> published-port connections are addressed to 127.0.0.1 and stay (as Kubernetes does).
        // Keyed on the source too: with br_netfilter the hook sees the bridge port, not the bridge, as input interface.
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} localnet ip saddr {ParseCidr(_options.Subnet)} ip daddr 127.0.0.0/8 ct state != {{ established, related }} drop");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} localnet iifname {bridge} ip daddr 127.0.0.0/8 ct state != {{ established, related }} drop");
        // The host answers sessions only on connections it opened (runner, published ports), and DNS if it is a resolver.
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} input iifname {bridge} ct state established,related accept");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} input iifname {bridge} ip saddr @public meta l4proto {{ tcp, udp }} th dport 53 ip daddr @resolvers accept");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} input iifname {bridge} drop");
        // Forwarding: replies first; never session to session; inbound only through published ports (DNAT);
        // egress per session policy: public sources only, resolvers on 53, nothing non-public, no IPv6.
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} forward iifname {bridge} oifname {bridge} drop");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} forward ct state established,related accept");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} forward oifname {bridge} ct status dnat accept");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} forward oifname {bridge} drop");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} forward iifname {bridge} meta nfproto ipv6 drop");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} forward iifname {bridge} ip saddr != @public drop");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} forward iifname {bridge} meta l4proto {{ tcp, udp }} th dport 53 ip daddr @resolvers accept");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule inet {t} forward iifname {bridge} ip daddr @denied drop");

        // L2: a session port sends only its own MAC+IPv4 (IP and ARP, in the frame and in ARP's sender fields) and nothing else (no IPv6, no VLANs, no other
        // protocols), and nothing is bridged from one session port to another.
        sb.AppendLine(CultureInfo.InvariantCulture, $"add table bridge {t}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add set bridge {t} ports {{ type ifname; }}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add set bridge {t} sources {{ type ifname . ether_addr . ipv4_addr; }}");
        foreach (var chain in new[] { "prerouting", "forward" })
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"add chain bridge {t} {chain} {{ type filter hook {chain} priority -10; policy accept; }}");
            sb.AppendLine(CultureInfo.InvariantCulture, $"flush chain bridge {t} {chain}");
        }
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule bridge {t} prerouting iifname != @ports accept");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule bridge {t} prerouting ether type != {{ ip, arp }} drop");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule bridge {t} prerouting ether type ip iifname . ether saddr . ip saddr != @sources drop");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule bridge {t} prerouting ether type arp iifname . arp saddr ether . arp saddr ip != @sources drop");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule bridge {t} prerouting ether type arp iifname . ether saddr . arp saddr ip != @sources drop");
        sb.AppendLine(CultureInfo.InvariantCulture, $"add rule bridge {t} forward iifname @ports drop");
        return sb.ToString();
    }

    /// <summary>Lets a session's port onto the bridge with its identity and policy. Idempotent.</summary>
    public Task AdmitAsync(GuardEntry entry, CancellationToken cancellationToken = default)
    {
        var sb = new StringBuilder();
        AppendElements(sb, "add", entry);
        // The policy can change on a re-admit: the address leaves `public` unless it is public now.
        if (entry.Egress == EgressPolicy.None)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"add element inet {TableName} public {{ {entry.Ip} }}");
            sb.AppendLine(CultureInfo.InvariantCulture, $"delete element inet {TableName} public {{ {entry.Ip} }}");
        }
        return RunAsync(sb.ToString(), cancellationToken);
    }

    /// <summary>Takes a session's elements out of every set. Idempotent: what is not there is not an error.</summary>
    public Task RemoveAsync(GuardEntry entry, CancellationToken cancellationToken = default)
    {
        // nft 1.0.6 has no "destroy": adding first makes the delete succeed whether or not the element was there.
        var sb = new StringBuilder();
        AppendElements(sb, "add", entry with { Egress = EgressPolicy.Public });
        AppendElements(sb, "delete", entry with { Egress = EgressPolicy.Public });
        return RunAsync(sb.ToString(), cancellationToken);
    }

    /// <summary>Makes the session sets exactly these entries, in one transaction.</summary>
    public Task ReplaceEntriesAsync(IReadOnlyList<GuardEntry> entries, CancellationToken cancellationToken = default)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"flush set bridge {TableName} ports");
        sb.AppendLine(CultureInfo.InvariantCulture, $"flush set bridge {TableName} sources");
        sb.AppendLine(CultureInfo.InvariantCulture, $"flush set inet {TableName} public");
        foreach (var entry in entries)
            AppendElements(sb, "add", entry);
        return RunAsync(sb.ToString(), cancellationToken);
    }

    private void AppendElements(StringBuilder sb, string verb, GuardEntry entry)
    {
        var port = Quote(ValidInterface(entry.HostInterface));
        var mac = ValidMac(entry.Mac);
        if (entry.Ip.AddressFamily != AddressFamily.InterNetwork)
            throw new ArgumentException($"session address {entry.Ip} is not IPv4");
        sb.AppendLine(CultureInfo.InvariantCulture, $"{verb} element bridge {TableName} ports {{ {port} }}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"{verb} element bridge {TableName} sources {{ {port} . {mac} . {entry.Ip} }}");
        if (entry.Egress == EgressPolicy.Public)
            sb.AppendLine(CultureInfo.InvariantCulture, $"{verb} element inet {TableName} public {{ {entry.Ip} }}");
    }

    /// <summary>Every session element in the tables ("ports:…", "sources:…", "public:…"); empty when no session is admitted.</summary>
    public async Task<IReadOnlyList<string>> ListEntriesAsync(CancellationToken cancellationToken = default)
    {
        var result = new List<string>();
        foreach (var (family, set) in new[] { ("bridge", "ports"), ("bridge", "sources"), ("inet", "public") })
        {
            var json = await RunAsync($"-j list set {family} {TableName} {set}", cancellationToken, arguments: true, allowMissing: true).ConfigureAwait(false);
            if (json.Length == 0)
                continue;
            var root = JsonNode.Parse(json);
            foreach (var item in root?["nftables"]?.AsArray() ?? [])
            {
                foreach (var element in item?["set"]?["elem"]?.AsArray() ?? [])
                    result.Add($"{set}:{ElementText(element)}");
            }
        }
        return result;
    }

    /// <summary>Null when the kernel would take the tables (a dry run: `nft -c`); else nft's complaint.</summary>
    public async Task<string?> ValidateAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            await RunAsync(BuildRuleset(HostAddresses()), cancellationToken, check: true).ConfigureAwait(false);
            return null;
        }
        catch (InvalidOperationException e)
        {
            return e.Message;
        }
    }

    /// <summary>Whether the tables exist (doctor; tests).</summary>
    public async Task<bool> ExistsAsync(CancellationToken cancellationToken = default) =>
        (await RunAsync($"list table inet {TableName}", cancellationToken, arguments: true, allowMissing: true).ConfigureAwait(false)).Length > 0;

    /// <summary>Removes both tables (tests; an operator retiring the bridge).</summary>
    public async Task DeleteAsync(CancellationToken cancellationToken = default)
    {
        await RunAsync($"delete table inet {TableName}", cancellationToken, arguments: true, allowMissing: true).ConfigureAwait(false);
        await RunAsync($"delete table bridge {TableName}", cancellationToken, arguments: true, allowMissing: true).ConfigureAwait(false);
    }

    private static string ElementText(JsonNode? element) => element switch
    {
        JsonValue v => v.ToString(),
        JsonObject { } o when o["concat"] is JsonArray parts => string.Join(" . ", parts.Select(p => p?.ToString())),
        _ => element?.ToJsonString() ?? "",
    };

    /// <summary>Runs nft with a script on stdin (or, with <paramref name="arguments"/>, the text as its arguments).</summary>
    private async Task<string> RunAsync(string text, CancellationToken cancellationToken, bool arguments = false, bool allowMissing = false, bool check = false)
    {
        var psi = new ProcessStartInfo(_options.NftPath)
        {
            RedirectStandardInput = !arguments,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (arguments)
        {
            foreach (var a in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                psi.ArgumentList.Add(a);
        }
        else
        {
            if (check)
                psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add("-f");
            psi.ArgumentList.Add("-");
        }
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.CommandTimeout);
        Process process;
        try
        {
            process = Process.Start(psi) ?? throw new InvalidOperationException("nft did not start");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"cannot run {_options.NftPath} ({e.Message}): install nftables (scripts/setup.sh does); session isolation depends on it", e);
        }
        using (process)
        {
            if (!arguments)
            {
                await process.StandardInput.WriteAsync(text.AsMemory(), timeout.Token).ConfigureAwait(false);
                process.StandardInput.Close();
            }
            var stdout = process.StandardOutput.ReadToEndAsync(timeout.Token);
            var stderr = process.StandardError.ReadToEndAsync(timeout.Token);
            try
            {
                await process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                process.Kill();
                throw;
            }
            var error = await stderr.ConfigureAwait(false);
            if (process.ExitCode != 0)
            {
                if (allowMissing && error.Contains("No such file or directory", StringComparison.Ordinal))
                    return "";
                throw new InvalidOperationException($"nft failed (exit {process.ExitCode}): {error.Trim()}" + (arguments ? $" [nft {text}]" : ""));
            }
            return await stdout.ConfigureAwait(false);
        }
    }

    /// <summary>The host's own IPv4 addresses (on every interface): never an egress destination.</summary>
    public static IReadOnlyList<IPAddress> HostAddresses() =>
        NetworkInterface.GetAllNetworkInterfaces()
            .SelectMany(i => i.GetIPProperties().UnicastAddresses.Select(u => u.Address))
            .Where(a => a.AddressFamily == AddressFamily.InterNetwork)
            .Distinct().ToList();

    /// <summary>The non-loopback IPv4 nameservers of a resolv.conf: what sessions are given by default.</summary>
    public static IReadOnlyList<IPAddress> NameserversOf(string resolvConf)
    {
        var result = new List<IPAddress>();
        if (!File.Exists(resolvConf))
            return result;
        foreach (var line in File.ReadLines(resolvConf))
        {
            var parts = line.Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (parts is ["nameserver", var address, ..] && IPAddress.TryParse(address, out var ip)
                && ip.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(ip))
            {
                result.Add(ip);
            }
        }
        return result;
    }

    public static IPNetwork ParseCidr(string cidr)
    {
        if (!IPNetwork.TryParse(cidr, out var network) || network.BaseAddress.AddressFamily != AddressFamily.InterNetwork
            || !network.BaseAddress.Equals(IPAddress.Parse(cidr.Split('/')[0])))
        {
            throw new ArgumentException($"'{cidr}' is not an IPv4 CIDR such as 203.0.113.0/24 (network address, no host bits)");
        }
        return network;
    }

    private static string Quote(string name) => "\"" + name + "\"";

    private static string ValidInterface(string name) =>
        InterfacePattern().IsMatch(name) ? name : throw new ArgumentException($"'{name}' is not an interface name");

    private static string ValidMac(string mac) =>
        MacPattern().IsMatch(mac) ? mac.ToLowerInvariant() : throw new ArgumentException($"'{mac}' is not a MAC address");

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")]
    private static partial Regex BridgeNamePattern();

    [GeneratedRegex("^[A-Za-z0-9_.@-]{1,15}$")]
    private static partial Regex InterfacePattern();

    [GeneratedRegex("^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")]
    private static partial Regex MacPattern();
}
