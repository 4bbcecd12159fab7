using System.Runtime.InteropServices;
using System.Text;

namespace KataAgent.Testing;

/// <summary>Looks at /proc directly, so leak checks see processes whatever containerd believes.</summary>
public static partial class ProcessTable
{
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int KillNative(int pid, int signal);

    public static bool Kill(int pid, int signal) => KillNative(pid, signal) == 0;

    public static IReadOnlyList<(int Pid, string CommandLine)> All()
    {
        var result = new List<(int, string)>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
                continue;
            try
            {
                var raw = File.ReadAllBytes(Path.Combine(dir, "cmdline"));
                result.Add((pid, Encoding.UTF8.GetString(raw).Replace('\0', ' ').Trim()));
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return result;
    }

    /// <summary>Shim processes serving the containerd at this socket (shims get it as -address).</summary>
    public static IReadOnlyList<(int Pid, string CommandLine)> ShimsOf(string containerdSocket) =>
        All().Where(p => p.CommandLine.Contains("containerd-shim", StringComparison.Ordinal) &&
                         p.CommandLine.Contains(containerdSocket, StringComparison.Ordinal)).ToList();
}
