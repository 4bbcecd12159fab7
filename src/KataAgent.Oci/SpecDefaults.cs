namespace KataAgent.Oci;

/// <summary>The sane Linux defaults <see cref="Specs.Generate"/> starts from.</summary>
public static class SpecDefaults
{
    public const string Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    public const string RootfsPath = "rootfs";
    public const ulong NoFileLimit = 1_048_576;
    /// <summary>64 MiB, the size Docker gives /dev/shm unless told otherwise.</summary>
    public const long DevShmSize = 64L * 1024 * 1024;

    /// <summary>The capability set Docker and containerd give a container by default.</summary>
    public static IReadOnlyList<string> Capabilities { get; } =
    [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
        "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ];

    // No "time" here, ever: see NamespaceTypes.Time.
    public static IReadOnlyList<string> Namespaces { get; } =
    [
        NamespaceTypes.Pid, NamespaceTypes.Ipc, NamespaceTypes.Uts,
        NamespaceTypes.Mount, NamespaceTypes.Network, NamespaceTypes.Cgroup,
    ];

    /// <summary>Kernel interfaces hidden from the container (bind-mounted over with /dev/null or an empty tmpfs).</summary>
    public static IReadOnlyList<string> MaskedPaths { get; } =
    [
        "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
        "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
        "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
    ];

    public static IReadOnlyList<string> ReadonlyPaths { get; } =
    [
        "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
    ];

    public static List<Mount> Mounts(long devShmSize = DevShmSize) =>
    [
        new() { Destination = "/proc", Type = "proc", Source = "proc", Options = ["nosuid", "noexec", "nodev"] },
        new() { Destination = "/dev", Type = "tmpfs", Source = "tmpfs", Options = ["nosuid", "strictatime", "mode=755", "size=65536k"] },
        new() { Destination = "/dev/pts", Type = "devpts", Source = "devpts", Options = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
        new() { Destination = "/dev/shm", Type = "tmpfs", Source = "shm", Options = ["nosuid", "noexec", "nodev", "mode=1777", ShmSizeOption(devShmSize)] },
        new() { Destination = "/dev/mqueue", Type = "mqueue", Source = "mqueue", Options = ["nosuid", "noexec", "nodev"] },
        new() { Destination = "/sys", Type = "sysfs", Source = "sysfs", Options = ["nosuid", "noexec", "nodev", "ro"] },
        new() { Destination = "/sys/fs/cgroup", Type = "cgroup", Source = "cgroup", Options = ["nosuid", "noexec", "nodev", "relatime", "ro"] },
    ];

    internal static string ShmSizeOption(long bytes) => "size=" + bytes.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// Device cgroup allowlist: deny everything, then allow mknod of any node (the node is
    /// useless without an allow rule) and the character devices every program expects.
    /// </summary>
    public static List<LinuxDeviceCgroup> Devices() =>
    [
        new() { Allow = false, Access = "rwm" },
        new() { Allow = true, Type = "c", Access = "m" },
        new() { Allow = true, Type = "b", Access = "m" },
        Char(1, 3),   // /dev/null
        Char(1, 5),   // /dev/zero
        Char(1, 7),   // /dev/full
        Char(1, 8),   // /dev/random
        Char(1, 9),   // /dev/urandom
        Char(5, 0),   // /dev/tty
        Char(5, 1),   // /dev/console
        Char(5, 2),   // /dev/ptmx
        Char(136, null), // /dev/pts/*
    ];

    // A null minor means "every minor number", as the runtime spec defines it.
    private static LinuxDeviceCgroup Char(long major, long? minor) =>
        new() { Allow = true, Type = "c", Major = major, Minor = minor, Access = "rwm" };
}
