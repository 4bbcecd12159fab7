using System.Globalization;
using KataAgent.Core.Locking;
using KataAgent.Core.Runtime;

namespace KataAgent.Core.HostDirectories;

/// <summary>`doctor`'s view of what keeps guest-written files harmless on the host: 0700 directories, the nosuid,nodev scratch mount.</summary>
public static class HostHardeningChecks
{
    public static IReadOnlyList<HostCheck> Run(AgentOptions options) => [Permissions(options), ScratchMount(options)];

    public static HostCheck Permissions(AgentOptions options)
    {
        const string name = "data dir permissions";
        var existing = DataDirPermissions.Describe(options).Where(d => d.Mode is not null).ToList();
        if (existing.Count == 0)
            return new HostCheck(name, true, $"{options.DataDir} does not exist yet: the agent creates it and its folders 0700 at start");
        var open = existing.Where(d => (d.Mode!.Value & ~DataDirPermissions.PrivateDirectory) != 0).ToList();
        if (open.Count == 0)
            return new HostCheck(name, true, $"{string.Join(", ", existing.Select(d => d.Path))}: 0700 (root's alone)");
        return new HostCheck(name, false, string.Join(", ", open.Select(d => $"{d.Path} is {Octal(d.Mode!.Value)}")) +
            ": other local users can reach what guests wrote there; the agent makes them 0700 at its next start (or chmod 0700 them now)");
    }

    public static HostCheck ScratchMount(AgentOptions options)
    {
        const string name = "scratch root mount";
        if (!Directory.Exists(options.ScratchRoot))
            return new HostCheck(name, true, $"{options.ScratchRoot} does not exist yet: the agent bind-mounts it nosuid,nodev at start");
        var (mount, own, hardened) = ScratchRootMount.Inspect(options.ScratchRoot);
        if (own && hardened)
        {
            return new HostCheck(name, true, $"{options.ScratchRoot}: its own mount, {string.Join(",", ScratchRootMount.RequiredOptions)}" +
                (mount!.Has("noexec") ? ",noexec" : ""));
        }

        var running = AgentRunning(options.DataDir);
        var what = $"{options.ScratchRoot} is not a nosuid,nodev mount (it is on {mount?.MountPoint ?? "?"}, {string.Join(",", mount?.Options ?? new HashSet<string>())})";
        return running is { } holder
            ? new HostCheck(name, false, $"{what} while {holder} runs: a setuid file or device node a guest leaves there works on the host; restart the agent (it mounts it at start)")
            : new HostCheck(name, true, $"{what}; no agent runs now: the agent bind-mounts it nosuid,nodev at start");
    }

    /// <summary>The data dir's lock holder when that process is alive (doctor must not take the lock itself: a starting run would be refused).</summary>
    private static DataDirLockHolder? AgentRunning(string dataDir) =>
        DataDirLock.ReadHolder(dataDir) is { } holder && Directory.Exists($"/proc/{holder.Pid.ToString(CultureInfo.InvariantCulture)}") ? holder : null;

    private static string Octal(UnixFileMode mode) => "0" + Convert.ToString((int)mode, 8);
}
