using System.Globalization;

namespace KataAgent.Core.Activity;

/// <summary>
/// Traffic on sessions' published service ports, from the host's connection tracking (/proc/net/nf_conntrack): a
/// published port is reached through the DNAT rules of CNI's portmap on the host, for runc and gVisor alike, so every
/// connection to it has an entry whose original destination port is the host port. A connection counts as traffic when
/// it is new since the last look, or its expiry moved forward (the kernel resets an entry's timeout on every packet; the
/// table shows whole seconds, so a move under <see cref="RefreshTolerance"/> is rounding, and steady traffic shows
/// every couple of seconds). Only the ports asked about are followed; the runner's own ports are not asked about (its
/// traffic is the agent's).
/// </summary>
public sealed class ServicePortTraffic(string conntrackPath = ServicePortTraffic.ConntrackPath)
{
    public const string ConntrackPath = "/proc/net/nf_conntrack";

    public static readonly TimeSpan RefreshTolerance = TimeSpan.FromSeconds(2);

    // Per connection (protocol, source, source port, destination port): when it expires, as of its last traffic seen.
    private Dictionary<string, DateTimeOffset> _seen = new(StringComparer.Ordinal);

    public bool IsAvailable => File.Exists(conntrackPath);

    /// <summary>The host ports (of those given) that saw traffic since the last call.</summary>
    public async Task<IReadOnlySet<int>> ActivePortsAsync(IReadOnlySet<int> hostPorts, CancellationToken cancellationToken)
    {
        if (hostPorts.Count == 0 || !IsAvailable)
            return new HashSet<int>();
        string text;
        try
        {
            text = await File.ReadAllTextAsync(conntrackPath, cancellationToken).ConfigureAwait(false);
        }
        catch (IOException)
        {
            return new HashSet<int>();
        }
        var (active, seen) = Compare(text, hostPorts, _seen, DateTimeOffset.UtcNow);
        _seen = seen;
        return active;
    }

    /// <summary>Pure: the ports with a new or refreshed connection in <paramref name="table"/> (read at <paramref name="now"/>), and what to compare with next time.</summary>
    public static (HashSet<int> Active, Dictionary<string, DateTimeOffset> Seen) Compare(string table, IReadOnlySet<int> hostPorts,
        IReadOnlyDictionary<string, DateTimeOffset> before, DateTimeOffset now)
    {
        var active = new HashSet<int>();
        var seen = new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal);
        foreach (var line in table.AsSpan().EnumerateLines())
        {
            if (Parse(line.ToString()) is not { } entry || !hostPorts.Contains(entry.DestinationPort))
                continue;
            var expires = now + TimeSpan.FromSeconds(entry.Timeout);
            if (before.TryGetValue(entry.Key, out var previous) && expires <= previous + RefreshTolerance)
            {
                seen[entry.Key] = previous;
                continue;
            }
            seen[entry.Key] = expires;
            active.Add(entry.DestinationPort);
        }
        return (active, seen);
    }

    private sealed record Entry(string Key, int DestinationPort, long Timeout);

    // "ipv4 2 tcp 6 431999 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=40000 dport=30001 src=10.0.0.2 ... [ASSURED] ..."
    // The first src/sport/dport are the original direction (the client's view: the host port).
    private static Entry? Parse(string line)
    {
        var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length < 6 || !long.TryParse(fields[4], NumberStyles.None, CultureInfo.InvariantCulture, out var timeout))
            return null;
        string? src = null, sport = null, dport = null;
        foreach (var field in fields.AsSpan(5))
        {
            if (src is null && field.StartsWith("src=", StringComparison.Ordinal))
                src = field[4..];
            else if (sport is null && field.StartsWith("sport=", StringComparison.Ordinal))
                sport = field[6..];
            else if (dport is null && field.StartsWith("dport=", StringComparison.Ordinal))
                dport = field[6..];
        }
        if (src is null || sport is null || !int.TryParse(dport, NumberStyles.None, CultureInfo.InvariantCulture, out var port))
            return null;
        return new Entry($"{fields[2]} {src}:{sport}->{port}", port, timeout);
    }
}
