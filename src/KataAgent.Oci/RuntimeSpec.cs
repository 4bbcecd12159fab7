using System.Text.Json.Serialization;

namespace KataAgent.Oci;

// OCI runtime-spec 1.0.2, the Linux subset the agent generates. Property names map to
// camelCase JSON through OciJsonContext; null properties are left out of the JSON.

/// <summary>Root of an OCI runtime spec (config.json).</summary>
public sealed class Spec
{
    public string OciVersion { get; set; } = Specs.OciVersion;
    public Process? Process { get; set; }
    public Root? Root { get; set; }
    public string? Hostname { get; set; }
    public List<Mount>? Mounts { get; set; }
    public Dictionary<string, string>? Annotations { get; set; }
    public Linux? Linux { get; set; }

    // True while linux.seccomp is the built-in profile: Generate then rebuilds it from the
    // final capability set, so option order does not matter for the seccomp/caps coupling.
    [JsonIgnore]
    internal bool SeccompIsDefault { get; set; }

    [JsonIgnore]
    internal bool DefaultSeccompAllowsClone3 { get; set; }
}

public sealed class Process
{
    public bool? Terminal { get; set; }
    public User User { get; set; } = new();
    public List<string>? Args { get; set; }
    public List<string>? Env { get; set; }
    public string Cwd { get; set; } = "/";
    public LinuxCapabilities? Capabilities { get; set; }
    public List<PosixRlimit>? Rlimits { get; set; }
    public bool? NoNewPrivileges { get; set; }
    public int? OomScoreAdj { get; set; }
}

public sealed class User
{
    public uint Uid { get; set; }
    public uint Gid { get; set; }
    public List<uint>? AdditionalGids { get; set; }
}

public sealed class LinuxCapabilities
{
    public List<string>? Bounding { get; set; }
    public List<string>? Effective { get; set; }
    public List<string>? Permitted { get; set; }
    public List<string>? Inheritable { get; set; }
    public List<string>? Ambient { get; set; }
}

public sealed class PosixRlimit
{
    public string Type { get; set; } = "";
    public ulong Hard { get; set; }
    public ulong Soft { get; set; }
}

public sealed class Root
{
    public string Path { get; set; } = "rootfs";
    public bool? Readonly { get; set; }
}

public sealed class Mount
{
    public string Destination { get; set; } = "";
    public string? Type { get; set; }
    public string? Source { get; set; }
    public List<string>? Options { get; set; }
}

public sealed class Linux
{
    public List<LinuxNamespace>? Namespaces { get; set; }
    public LinuxResources? Resources { get; set; }
    public string? CgroupsPath { get; set; }
    public LinuxSeccomp? Seccomp { get; set; }
    public List<string>? MaskedPaths { get; set; }
    public List<string>? ReadonlyPaths { get; set; }
    public Dictionary<string, string>? Sysctl { get; set; }
}

public sealed class LinuxNamespace
{
    public string Type { get; set; } = "";
    public string? Path { get; set; }
}

public sealed class LinuxResources
{
    public List<LinuxDeviceCgroup>? Devices { get; set; }
    public LinuxMemory? Memory { get; set; }
    public LinuxCpu? Cpu { get; set; }
    public LinuxPids? Pids { get; set; }
}

public sealed class LinuxDeviceCgroup
{
    public bool Allow { get; set; }
    public string? Type { get; set; }
    public long? Major { get; set; }
    public long? Minor { get; set; }
    public string? Access { get; set; }
}

public sealed class LinuxMemory
{
    /// <summary>Bytes. Kata sizes / hot-plugs guest memory from this.</summary>
    public long? Limit { get; set; }
    /// <summary>Memory plus swap in bytes (-1 = unlimited), as runc interprets it.</summary>
    public long? Swap { get; set; }
}

public sealed class LinuxCpu
{
    public ulong? Shares { get; set; }
    public long? Quota { get; set; }
    public ulong? Period { get; set; }
    public string? Cpus { get; set; }
    public string? Mems { get; set; }
}

public sealed class LinuxPids
{
    public long Limit { get; set; }
}

public sealed class LinuxSeccomp
{
    public string DefaultAction { get; set; } = SeccompActions.Errno;
    public uint? DefaultErrnoRet { get; set; }
    public List<string>? Architectures { get; set; }
    public List<LinuxSyscall>? Syscalls { get; set; }
}

public sealed class LinuxSyscall
{
    public List<string> Names { get; set; } = [];
    public string Action { get; set; } = SeccompActions.Allow;
    public uint? ErrnoRet { get; set; }
    public List<LinuxSeccompArg>? Args { get; set; }
}

public sealed class LinuxSeccompArg
{
    public uint Index { get; set; }
    public ulong Value { get; set; }
    public ulong? ValueTwo { get; set; }
    public string Op { get; set; } = "";
}

public static class SeccompActions
{
    public const string Allow = "SCMP_ACT_ALLOW";
    public const string Errno = "SCMP_ACT_ERRNO";
    public const string Kill = "SCMP_ACT_KILL";
    public const string Log = "SCMP_ACT_LOG";
}

/// <summary>Namespace type names as the runtime spec spells them.</summary>
public static class NamespaceTypes
{
    public const string Pid = "pid";
    public const string Ipc = "ipc";
    public const string Uts = "uts";
    public const string Mount = "mount";
    public const string Network = "network";
    public const string Cgroup = "cgroup";
    public const string User = "user";
    /// <summary>Never allowed in a generated spec: Kata's agent before 3.32 rejects it.</summary>
    public const string Time = "time";
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    WriteIndented = false)]
[JsonSerializable(typeof(Spec))]
internal sealed partial class OciJsonContext : JsonSerializerContext;
