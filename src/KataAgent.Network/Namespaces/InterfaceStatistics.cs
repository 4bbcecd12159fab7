namespace KataAgent.Network;

/// <summary>Counters of one interface as the kernel reports them in /proc/net/dev (seen from inside its namespace).</summary>
public sealed record InterfaceStatistics(
    string Interface, long RxBytes, long RxPackets, long RxErrors, long RxDropped,
    long TxBytes, long TxPackets, long TxErrors, long TxDropped)
{
    /// <summary>Parses the /proc/net/dev format: two header lines, then "name: 16 counters".</summary>
    internal static IReadOnlyDictionary<string, InterfaceStatistics> ParseProcNetDev(string text)
    {
        var result = new Dictionary<string, InterfaceStatistics>(StringComparer.Ordinal);
        foreach (string line in text.Split('\n'))
        {
            int colon = line.IndexOf(':');
            if (colon < 0)
                continue;
            string name = line[..colon].Trim();
            string[] f = line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (name.Length == 0 || f.Length < 16)
                continue;
            result[name] = new InterfaceStatistics(name,
                long.Parse(f[0]), long.Parse(f[1]), long.Parse(f[2]), long.Parse(f[3]),
                long.Parse(f[8]), long.Parse(f[9]), long.Parse(f[10]), long.Parse(f[11]));
        }
        return result;
    }
}
