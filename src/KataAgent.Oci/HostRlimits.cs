using System.Globalization;

namespace KataAgent.Oci;

/// <summary>Reads the calling process's resource limits from /proc/self/limits.</summary>
public static class HostRlimits
{
    // /proc/self/limits names each limit in words; the spec uses the RLIMIT_ constants.
    private static readonly Dictionary<string, string> Names = new(StringComparer.Ordinal)
    {
        ["Max cpu time"] = "RLIMIT_CPU",
        ["Max file size"] = "RLIMIT_FSIZE",
        ["Max data size"] = "RLIMIT_DATA",
        ["Max stack size"] = "RLIMIT_STACK",
        ["Max core file size"] = "RLIMIT_CORE",
        ["Max resident set"] = "RLIMIT_RSS",
        ["Max processes"] = "RLIMIT_NPROC",
        ["Max open files"] = "RLIMIT_NOFILE",
        ["Max locked memory"] = "RLIMIT_MEMLOCK",
        ["Max address space"] = "RLIMIT_AS",
        ["Max file locks"] = "RLIMIT_LOCKS",
        ["Max pending signals"] = "RLIMIT_SIGPENDING",
        ["Max msgqueue size"] = "RLIMIT_MSGQUEUE",
        ["Max nice priority"] = "RLIMIT_NICE",
        ["Max realtime priority"] = "RLIMIT_RTPRIO",
        ["Max realtime timeout"] = "RLIMIT_RTTIME",
    };

    /// <summary>Hard limits by RLIMIT_ name; "unlimited" ones are left out.</summary>
    public static IReadOnlyDictionary<string, ulong> CurrentHardLimits(string path = "/proc/self/limits") =>
        Parse(File.ReadAllLines(path));

    internal static Dictionary<string, ulong> Parse(IEnumerable<string> lines)
    {
        var result = new Dictionary<string, ulong>(StringComparer.Ordinal);
        foreach (var line in lines)
        {
            // "Max open files            20000                20000                files"
            foreach (var (label, type) in Names)
            {
                if (!line.StartsWith(label + " ", StringComparison.Ordinal))
                    continue;
                var fields = line[label.Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length >= 2 && ulong.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var hard))
                    result[type] = hard;
            }
        }

        return result;
    }
}
