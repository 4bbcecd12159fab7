using System.Text.RegularExpressions;

namespace KataAgent.Oci;

// The rules a generated spec must meet. Some repeat the JSON schema (so a bad spec fails with
// a readable message before containerd or a shim sees it); others are the agent's own:
// no time namespace, no host network namespace, no two mounts on one destination.
internal static partial class SpecValidator
{
    private static readonly HashSet<string> KnownNamespaces = new(StringComparer.Ordinal)
    {
        NamespaceTypes.Pid, NamespaceTypes.Ipc, NamespaceTypes.Uts, NamespaceTypes.Mount,
        NamespaceTypes.Network, NamespaceTypes.Cgroup, NamespaceTypes.User,
    };

    private static readonly HashSet<string> SeccompActionNames = new(StringComparer.Ordinal)
    {
        "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
    };

    [GeneratedRegex("^CAP_[A-Z_]+$")]
    private static partial Regex CapabilityName();

    [GeneratedRegex("^RLIMIT_[A-Z]+$")]
    private static partial Regex RlimitName();

    // cpuset lists such as "0", "0-3", "0,2,4-7".
    [GeneratedRegex(@"^\d+(-\d+)?(,\d+(-\d+)?)*$")]
    private static partial Regex CpusetList();

    // RFC 1123 host name label(s), as the kernel takes at most 64 bytes.
    [GeneratedRegex("^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")]
    private static partial Regex HostName();

    public static List<string> Check(Spec spec)
    {
        var p = new List<string>();
        if (string.IsNullOrEmpty(spec.OciVersion))
            p.Add("ociVersion is empty");

        CheckProcess(spec.Process, p);

        if (spec.Root is null || string.IsNullOrWhiteSpace(spec.Root.Path))
            p.Add("root.path is empty (the runtime needs the container's rootfs directory)");

        CheckMounts(spec.Mounts ?? [], p);

        foreach (var key in spec.Annotations?.Keys ?? Enumerable.Empty<string>())
        {
            if (string.IsNullOrWhiteSpace(key))
                p.Add("annotations: empty key");
        }

        if (spec.Linux is null)
        {
            p.Add("linux is missing (namespaces, cgroups and seccomp live there)");
            return p;
        }

        var namespaces = CheckNamespaces(spec.Linux.Namespaces ?? [], p);
        if (spec.Hostname is { } hostname)
        {
            if (hostname.Length > 64 || !HostName().IsMatch(hostname))
                p.Add($"hostname '{hostname}' is not a valid host name (letters, digits, '-', '.', at most 64 characters)");
            if (!namespaces.Contains(NamespaceTypes.Uts))
                p.Add("hostname is set but linux.namespaces has no 'uts' namespace to set it in");
        }

        CheckResources(spec.Linux.Resources, p);
        CheckSeccomp(spec.Linux.Seccomp, p);
        CheckAbsolute("linux.maskedPaths", spec.Linux.MaskedPaths, p);
        CheckAbsolute("linux.readonlyPaths", spec.Linux.ReadonlyPaths, p);
        foreach (var key in spec.Linux.Sysctl?.Keys ?? Enumerable.Empty<string>())
        {
            if (string.IsNullOrWhiteSpace(key))
                p.Add("linux.sysctl: empty key");
        }

        return p;
    }

    private static void CheckProcess(Process? process, List<string> p)
    {
        if (process is null)
        {
            p.Add("process is missing");
            return;
        }

        if (process.Args is null || process.Args.Count == 0)
            p.Add("process.args is empty: the container needs a command (set one, or give an image with Entrypoint/Cmd)");
        else if (string.IsNullOrWhiteSpace(process.Args[0]))
            p.Add("process.args[0] (the executable) is empty");
        else if (process.Args.Any(a => a is null))
            p.Add("process.args contains a null argument");

        if (string.IsNullOrEmpty(process.Cwd) || !process.Cwd.StartsWith('/'))
            p.Add($"process.cwd '{process.Cwd}' is not an absolute path");

        var keys = new HashSet<string>(StringComparer.Ordinal);
        foreach (var entry in process.Env ?? [])
        {
            var eq = entry?.IndexOf('=', StringComparison.Ordinal) ?? -1;
            if (entry is null || eq <= 0)
                p.Add($"process.env entry '{entry}' is not of the form NAME=VALUE");
            else if (!keys.Add(entry[..eq]))
                p.Add($"process.env sets '{entry[..eq]}' more than once");
        }

        if (process.Capabilities is { } caps)
        {
            var all = new[] { caps.Bounding, caps.Effective, caps.Permitted, caps.Inheritable, caps.Ambient };
            foreach (var cap in all.SelectMany(l => l ?? []).Distinct(StringComparer.Ordinal))
            {
                if (!CapabilityName().IsMatch(cap))
                    p.Add($"process.capabilities: '{cap}' is not a capability name (CAP_...)");
            }
        }

        var rlimitTypes = new HashSet<string>(StringComparer.Ordinal);
        foreach (var rl in process.Rlimits ?? [])
        {
            if (!RlimitName().IsMatch(rl.Type))
                p.Add($"process.rlimits: '{rl.Type}' is not an rlimit name (RLIMIT_...)");
            if (rl.Soft > rl.Hard)
                p.Add($"process.rlimits {rl.Type}: soft limit {rl.Soft} is above hard limit {rl.Hard}");
            if (!rlimitTypes.Add(rl.Type))
                p.Add($"process.rlimits sets {rl.Type} more than once");
        }

        if (process.OomScoreAdj is < -1000 or > 1000)
            p.Add($"process.oomScoreAdj {process.OomScoreAdj} is outside -1000..1000");
    }

    private static void CheckMounts(List<Mount> mounts, List<string> p)
    {
        var destinations = new HashSet<string>(StringComparer.Ordinal);
        foreach (var m in mounts)
        {
            if (string.IsNullOrEmpty(m.Destination) || !m.Destination.StartsWith('/'))
            {
                p.Add($"mounts: destination '{m.Destination}' is not an absolute path");
                continue;
            }

            if (m.Destination.Split('/').Contains(".."))
                p.Add($"mounts: destination '{m.Destination}' contains '..'");

            if (!destinations.Add(NormalizeDestination(m.Destination)))
                p.Add($"mounts: duplicate mount destination '{m.Destination}'");

            var isBind = m.Type == "bind" || (m.Options?.Any(o => o is "bind" or "rbind") ?? false);
            if (isBind && (string.IsNullOrEmpty(m.Source) || !m.Source.StartsWith('/')))
                p.Add($"mounts: bind mount on '{m.Destination}' has source '{m.Source}', which is not an absolute host path");
        }
    }

    internal static string NormalizeDestination(string destination)
    {
        var parts = destination.Split('/', StringSplitOptions.RemoveEmptyEntries).Where(s => s != ".");
        return "/" + string.Join('/', parts);
    }

    private static HashSet<string> CheckNamespaces(List<LinuxNamespace> namespaces, List<string> p)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var ns in namespaces)
        {
            if (string.Equals(ns.Type, NamespaceTypes.Time, StringComparison.OrdinalIgnoreCase))
                p.Add("linux.namespaces contains a 'time' namespace, which a spec from this agent must never have (Kata's agent before 3.32 rejects it)");
            else if (!KnownNamespaces.Contains(ns.Type))
                p.Add($"linux.namespaces: unknown namespace type '{ns.Type}'");

            if (!seen.Add(ns.Type))
                p.Add($"linux.namespaces has '{ns.Type}' more than once");

            if (ns.Path is not null && !ns.Path.StartsWith('/'))
                p.Add($"linux.namespaces: path '{ns.Path}' of the '{ns.Type}' namespace is not absolute");
        }

        if (!seen.Contains(NamespaceTypes.Network))
            p.Add("linux.namespaces has no 'network' namespace: the container would share the host's network (Kata refuses that, and the agent never does it)");
        if (!seen.Contains(NamespaceTypes.Mount))
            p.Add("linux.namespaces has no 'mount' namespace");
        return seen;
    }

    private static void CheckResources(LinuxResources? r, List<string> p)
    {
        if (r is null)
            return;

        if (r.Memory is { } mem)
        {
            if (mem.Limit is <= 0)
                p.Add($"linux.resources.memory.limit {mem.Limit} must be a positive number of bytes");
            if (mem.Swap is { } swap && swap != -1 && (swap <= 0 || (mem.Limit is { } lim && swap < lim)))
                p.Add($"linux.resources.memory.swap {swap} must be -1 (unlimited) or at least the memory limit (it counts memory plus swap)");
        }

        if (r.Cpu is { } cpu)
        {
            if (cpu.Shares is < 2)
                p.Add($"linux.resources.cpu.shares {cpu.Shares} must be at least 2");
            if (cpu.Quota is { } quota && quota != -1 && quota < 1000)
                p.Add($"linux.resources.cpu.quota {quota} must be -1 (unlimited) or at least 1000 microseconds");
            if (cpu.Period is { } period && (period < 1000 || period > 1_000_000))
                p.Add($"linux.resources.cpu.period {period} must be between 1000 and 1000000 microseconds");
            if (cpu.Cpus is { } cpus && !CpusetList().IsMatch(cpus))
                p.Add($"linux.resources.cpu.cpus '{cpus}' is not a cpu list like '0-3,6'");
            if (cpu.Mems is { } mems && !CpusetList().IsMatch(mems))
                p.Add($"linux.resources.cpu.mems '{mems}' is not a node list like '0' or '0-1'");
        }

        if (r.Pids is { } pids && pids.Limit != -1 && pids.Limit <= 0)
            p.Add($"linux.resources.pids.limit {pids.Limit} must be -1 (unlimited) or positive");

        foreach (var d in r.Devices ?? [])
        {
            if (d.Type is not (null or "a" or "b" or "c"))
                p.Add($"linux.resources.devices: type '{d.Type}' is not one of a, b, c");
            if (d.Access is { } access && (access.Length == 0 || access.Any(ch => ch is not ('r' or 'w' or 'm'))))
                p.Add($"linux.resources.devices: access '{access}' is not made of r, w, m");
        }
    }

    private static void CheckSeccomp(LinuxSeccomp? seccomp, List<string> p)
    {
        if (seccomp is null)
            return;
        if (!SeccompActionNames.Contains(seccomp.DefaultAction))
            p.Add($"linux.seccomp.defaultAction '{seccomp.DefaultAction}' is not a seccomp action");
        foreach (var rule in seccomp.Syscalls ?? [])
        {
            if (rule.Names.Count == 0 || rule.Names.Any(string.IsNullOrWhiteSpace))
                p.Add("linux.seccomp.syscalls: a rule has no (or an empty) syscall name");
            if (!SeccompActionNames.Contains(rule.Action))
                p.Add($"linux.seccomp.syscalls: action '{rule.Action}' is not a seccomp action");
        }
    }

    private static void CheckAbsolute(string field, List<string>? paths, List<string> p)
    {
        foreach (var path in paths ?? [])
        {
            if (string.IsNullOrEmpty(path) || !path.StartsWith('/'))
                p.Add($"{field}: '{path}' is not an absolute path");
        }
    }
}
