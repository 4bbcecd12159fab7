using System.Globalization;
using System.Text;
using KataAgent.Runner.Native;

namespace KataAgent.Runner;

/// <summary>
/// On the agent's <c>event {type: "oom"}</c>, writes the runner's process tree (pid, RSS, command line) to the
/// container log, so whoever reads it sees what was using the memory when the OOM killer struck.
/// </summary>
internal static class ProcessTreeLog
{
    public static void LogOutOfMemory()
    {
        try
        {
            Log.Warn($"out-of-memory reported by the agent; processes of this session:\n{Describe(Libc.getpid())}");
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            Log.Warn($"out-of-memory reported by the agent; cannot list the processes: {exception.Message}");
        }
    }

    /// <summary>One line per process below (and including) <paramref name="rootPid"/>, indented by depth.</summary>
    public static string Describe(int rootPid)
    {
        var children = new Dictionary<int, List<int>>();
        foreach (string directory in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(directory), NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
                && TryReadParent(pid, out int parent))
            {
                if (!children.TryGetValue(parent, out List<int>? list))
                {
                    children[parent] = list = [];
                }
                list.Add(pid);
            }
        }
        var text = new StringBuilder();
        void Walk(int pid, int depth)
        {
            if (depth > 64)
            {
                return;
            }
            text.Append(' ', depth * 2).Append(pid).Append(" rss ").Append(ReadRssKiB(pid) / 1024).Append(" MiB: ")
                .Append(ReadCommandLine(pid)).Append('\n');
            foreach (int child in children.GetValueOrDefault(pid, []).Order())
            {
                Walk(child, depth + 1);
            }
        }
        Walk(rootPid, 0);
        return text.ToString().TrimEnd('\n');
    }

    private static bool TryReadParent(int pid, out int parent)
    {
        parent = 0;
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            // The command name in parentheses may contain spaces and parentheses: fields follow the last ')'.
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return fields.Length > 1 && int.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out parent);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException)
        {
            return false;
        }
    }

    private static long ReadRssKiB(int pid)
    {
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                {
                    return long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
                }
            }
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException or FormatException)
        {
        }
        return 0;
    }

    private static string ReadCommandLine(int pid)
    {
        try
        {
            string commandLine = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ').Trim();
            return commandLine.Length > 300 ? commandLine[..300] + "..." : commandLine;
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            return "?";
        }
    }
}
