using System.Globalization;
using KataAgent.Runner.Native;

namespace KataAgent.Runner.Transport;

/// <summary>
/// The agent's TCP connections to one of our bound ports, as the kernel shows them in /proc/net/tcp and tcp6.
/// NetMQ's listener sets SO_LINGER 0 and the connections it accepts inherit it, so closing them sends a reset: the
/// agent's kernel then drops what it received but the agent had not read yet, and NetMQ's Linger cannot help.
/// </summary>
internal static class AgentConnections
{
    private static readonly string[] Tables = ["/proc/net/tcp", "/proc/net/tcp6"];

    /// <summary>One ESTABLISHED row: bytes not yet acknowledged by the peer, and the socket's inode.</summary>
    internal readonly record struct Row(long Unsent, string Inode);

    /// <summary>Bytes not yet acknowledged on established connections from <paramref name="localPort"/> (0 when /proc/net cannot tell).</summary>
    public static long UnsentBytes(int localPort) => ReadRows(localPort).Sum(row => row.Unsent);

    /// <summary>Clears SO_LINGER 0 on our sockets of those connections, so that closing them is a FIN after the data.</summary>
    public static unsafe void CloseWithoutReset(int localPort)
    {
        var inodes = ReadRows(localPort).Select(row => row.Inode).ToHashSet(StringComparer.Ordinal);
        if (inodes.Count == 0)
        {
            return;
        }
        IEnumerable<string> descriptors;
        try
        {
            descriptors = Directory.EnumerateFileSystemEntries("/proc/self/fd").ToList();
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            return;
        }
        foreach (string path in descriptors)
        {
            string? target = ReadLink(path);
            if (target is null || !target.StartsWith("socket:[", StringComparison.Ordinal) || !inodes.Contains(target[8..^1])
                || !int.TryParse(Path.GetFileName(path), NumberStyles.None, CultureInfo.InvariantCulture, out int fd))
            {
                continue;
            }
            var linger = new Libc.Linger { OnOff = 0, Seconds = 0 };
            if (Libc.setsockopt(fd, Libc.SOL_SOCKET, Libc.SO_LINGER, &linger, (uint)sizeof(Libc.Linger)) != 0)
            {
                Log.Debug($"cannot clear SO_LINGER on fd {fd}: {Libc.ErrorText(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
            }
        }
    }

    private static string? ReadLink(string path)
    {
        try
        {
            return new FileInfo(path).LinkTarget;
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static List<Row> ReadRows(int localPort)
    {
        var rows = new List<Row>();
        foreach (string table in Tables)
        {
            try
            {
                rows.AddRange(ParseRows(File.ReadLines(table), localPort));
            }
            catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
            {
                // No such table in this kernel (or gVisor): nothing to wait for.
            }
        }
        return rows;
    }

    /// <summary>ESTABLISHED rows of a /proc/net/tcp table whose local port is <paramref name="localPort"/>.</summary>
    internal static IEnumerable<Row> ParseRows(IEnumerable<string> tableLines, int localPort)
    {
        // "sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid timeout inode ...", addresses HEX:PORT
        foreach (string line in tableLines.Skip(1))
        {
            string[] fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 10 || fields[3] != "01")
            {
                continue;
            }
            int colon = fields[1].LastIndexOf(':');
            int queues = fields[4].IndexOf(':', StringComparison.Ordinal);
            if (colon >= 0 && queues >= 0
                && int.TryParse(fields[1].AsSpan(colon + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int port) && port == localPort
                && long.TryParse(fields[4].AsSpan(0, queues), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long unsent))
            {
                yield return new Row(unsent, fields[9]);
            }
        }
    }
}
