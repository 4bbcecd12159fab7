using System.Globalization;

namespace KataAgent.Core.Diagnostics;

/// <summary>
/// A host process a session's life depends on beyond its task (the containerd shim),
/// identified by pid and start time so a reused pid is not taken for it. When it is gone at the task's exit, the exit
/// is containerd's cleanup after it died, not the session's own end: sandbox-died.
/// </summary>
public sealed record SandboxProcess(string Role, int Pid, long StartTime)
{
    public const string ShimRole = "shim";
    public const string RunscSandboxRole = "runsc-sandbox";

    /// <summary>
    /// The shim (containerd-shim-*) of a container, when one runs now, and under it gVisor's sandbox (runsc-sandbox,
    /// reparented to the shim, which is its subreaper). The sandbox is the task's init as the shim sees it, so it is
    /// gone at every exit: only how it ended (<see cref="ProcessExitWatcher"/>) tells a kill from the host.
    /// </summary>
    public static IReadOnlyList<SandboxProcess> FindFor(string ns, string containerId)
    {
        var found = new List<SandboxProcess>();
        var processes = ProcessTree.Snapshot();
        foreach (var p in processes)
        {
            var args = p.CommandLine.Split(' ');
            string? Arg(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
            if (args[0].Contains("containerd-shim", StringComparison.Ordinal) && Arg("-namespace") == ns && Arg("-id") == containerId &&
                StartTimeOf(p.Pid) is { } start)
            {
                found.Add(new SandboxProcess(ShimRole, p.Pid, start));
            }
        }
        foreach (var shim in found.ToList())
        {
            foreach (var p in processes)
            {
                if (p.ParentPid == shim.Pid && p.CommandLine.Split(' ')[0].EndsWith(RunscSandboxRole, StringComparison.Ordinal) &&
                    StartTimeOf(p.Pid) is { } start)
                {
                    found.Add(new SandboxProcess(RunscSandboxRole, p.Pid, start));
                }
            }
        }
        return found;
    }

    /// <summary>Still running: the same process (start time), not a zombie.</summary>
    public bool IsAlive() => ReadStat(Pid) is { } stat && stat.State != 'Z' && stat.StartTime == StartTime;

    private static long? StartTimeOf(int pid) => ReadStat(pid)?.StartTime;

    private static (char State, long StartTime)? ReadStat(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            // After the command name in parentheses: state is field 3, starttime field 22 (proc(5)).
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (fields[0][0], long.Parse(fields[19], CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }
}
