using System.Globalization;
using System.Runtime.InteropServices;

namespace KataAgent.Core.Diagnostics;

/// <summary>Reads /proc directly: shim processes and their descendants, whatever containerd believes.</summary>
public static partial class ProcessTree
{
    public sealed record ProcessEntry(int Pid, int ParentPid, string CommandLine);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int KillNative(int pid, int signal);

    public static IReadOnlyList<ProcessEntry> Snapshot()
    {
        var result = new List<ProcessEntry>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
                continue;
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                // The command name is in parentheses and may contain spaces: fields resume after the last ')'.
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                var ppid = int.Parse(fields[1], CultureInfo.InvariantCulture);
                var cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ').Trim();
                result.Add(new ProcessEntry(pid, ppid, cmdline));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
            {
                // gone meanwhile
            }
        }
        return result;
    }

    /// <summary>containerd shims serving this containerd socket in this namespace, with their container ids.</summary>
    public static IReadOnlyList<(ProcessEntry Process, string ContainerId)> ShimsOf(string socket, string ns)
    {
        var result = new List<(ProcessEntry, string)>();
        foreach (var p in Snapshot())
        {
            if (!p.CommandLine.Contains("containerd-shim", StringComparison.Ordinal))
                continue;
            var args = p.CommandLine.Split(' ');
            string? Arg(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
            if (Arg("-address") == socket && Arg("-namespace") == ns && Arg("-id") is { } id)
                result.Add((p, id));
        }
        return result;
    }

    /// <summary>SIGKILLs a process and everything below it, deepest first.</summary>
    public static void KillTree(int pid)
    {
        var all = Snapshot();
        var order = new List<int>();
        void Walk(int parent)
        {
            foreach (var child in all.Where(p => p.ParentPid == parent))
                Walk(child.Pid);
            order.Add(parent);
        }
        Walk(pid);
        foreach (var victim in order)
            _ = KillNative(victim, 9);
    }
}
