namespace KataAgent.Oci;

/// <summary>
/// The option functions <see cref="Specs.Generate"/> composes. Options apply in order and a
/// later one wins; most checks happen once at the end of Generate, so an option only throws
/// when it cannot even apply its input.
/// </summary>
public static class SpecOpts
{
    /// <summary>Several options as one (e.g. the fixed part of a runtime class).</summary>
    public static SpecOpt Compose(params SpecOpt[] opts) => spec =>
    {
        foreach (var opt in opts)
            opt(spec);
    };

    // ---- process -------------------------------------------------------------------------

    /// <summary>Replaces the command line.</summary>
    public static SpecOpt WithProcessArgs(params string[] args) => spec =>
        EnsureProcess(spec).Args = [.. args];

    /// <summary>Adds or replaces variables by name ("K=V"); a bare "K" removes K.</summary>
    public static SpecOpt WithEnv(params string[] entries) => spec =>
    {
        var process = EnsureProcess(spec);
        process.Env = Specs.MergeEnv(process.Env ?? [], entries);
    };

    /// <summary>Adds or replaces one variable.</summary>
    public static SpecOpt WithEnvVar(string name, string value) => WithEnv(name + "=" + value);

    /// <summary>Working directory; must be absolute.</summary>
    public static SpecOpt WithProcessCwd(string cwd) => spec => EnsureProcess(spec).Cwd = cwd;

    /// <summary>Numeric user and primary group (clears additional groups).</summary>
    public static SpecOpt WithUidGid(uint uid, uint gid) => spec =>
        EnsureProcess(spec).User = new User { Uid = uid, Gid = gid };

    /// <summary>Adds supplementary groups (kept once each, in order).</summary>
    public static SpecOpt WithAdditionalGids(params uint[] gids) => spec =>
    {
        var user = EnsureProcess(spec).User;
        user.AdditionalGids = (user.AdditionalGids ?? []).Concat(gids).Distinct().ToList();
    };

    /// <summary>
    /// A Docker-style user string ("uid", "uid:gid", "name", "name:group", ...) resolved by
    /// <see cref="UserResolver"/>; names need <paramref name="rootfsPath"/> (a host directory
    /// holding the container's /etc), except "root".
    /// </summary>
    public static SpecOpt WithUser(string user, string? rootfsPath = null) => spec =>
    {
        var resolved = UserResolver.Resolve(user, rootfsPath);
        EnsureProcess(spec).User = new User
        {
            Uid = resolved.Uid,
            Gid = resolved.Gid,
            AdditionalGids = resolved.AdditionalGids.Count > 0 ? [.. resolved.AdditionalGids] : null,
        };
    };

    /// <summary>Adds or replaces one resource limit, e.g. ("RLIMIT_NOFILE", 1024, 4096).</summary>
    public static SpecOpt WithRlimit(string type, ulong soft, ulong hard) => spec =>
    {
        var process = EnsureProcess(spec);
        process.Rlimits ??= [];
        process.Rlimits.RemoveAll(r => r.Type == type);
        process.Rlimits.Add(new PosixRlimit { Type = type, Soft = soft, Hard = hard });
    };

    /// <summary>
    /// Lowers every rlimit in the spec to at most the calling process's own hard limit (from
    /// /proc/self/limits). Only for a host where the agent lacks CAP_SYS_RESOURCE, such as a
    /// sandboxed CI machine: there the runtime cannot raise a limit and fails the start.
    /// </summary>
    public static SpecOpt WithRlimitsCappedToCurrentProcess() => spec =>
    {
        var hard = HostRlimits.CurrentHardLimits();
        foreach (var rl in spec.Process?.Rlimits ?? [])
        {
            if (hard.TryGetValue(rl.Type, out var max))
            {
                rl.Hard = Math.Min(rl.Hard, max);
                rl.Soft = Math.Min(rl.Soft, rl.Hard);
            }
        }
    };

    /// <summary>Replaces the bounding, effective and permitted sets.</summary>
    public static SpecOpt WithCapabilities(params string[] caps) => spec =>
        EnsureProcess(spec).Capabilities = Specs.CapabilitySet(caps);

    public static SpecOpt WithAddedCapabilities(params string[] caps) => spec =>
    {
        var process = EnsureProcess(spec);
        process.Capabilities = Specs.CapabilitySet((process.Capabilities?.Bounding ?? []).Concat(caps));
    };

    public static SpecOpt WithDroppedCapabilities(params string[] caps) => spec =>
    {
        var process = EnsureProcess(spec);
        process.Capabilities = Specs.CapabilitySet((process.Capabilities?.Bounding ?? []).Except(caps, StringComparer.Ordinal));
    };

    /// <summary>Whether setuid binaries and file capabilities may raise privileges (default: they may not).</summary>
    public static SpecOpt WithNoNewPrivileges(bool value = true) => spec => EnsureProcess(spec).NoNewPrivileges = value;

    public static SpecOpt WithOomScoreAdj(int value) => spec => EnsureProcess(spec).OomScoreAdj = value;

    // ---- root, hostname, mounts ----------------------------------------------------------

    /// <summary>
    /// Rootfs directory. The default "rootfs" is relative to the bundle, which is where a
    /// containerd shim mounts the snapshot mounts it is given at task creation.
    /// </summary>
    public static SpecOpt WithRootfsPath(string path) => spec => EnsureRoot(spec).Path = path;

    public static SpecOpt WithReadonlyRootfs(bool value = true) => spec => EnsureRoot(spec).Readonly = value;

    public static SpecOpt WithHostname(string hostname) => spec => spec.Hostname = hostname;

    /// <summary>Size of the /dev/shm tmpfs in bytes.</summary>
    public static SpecOpt WithDevShmSize(long bytes) => spec =>
    {
        if (bytes <= 0)
            throw new InvalidSpecException($"mounts: /dev/shm size {bytes} must be a positive number of bytes");
        var shm = spec.Mounts?.Find(m => m.Destination == "/dev/shm")
            ?? throw new InvalidSpecException("mounts: there is no /dev/shm mount to size");
        shm.Options = (shm.Options ?? []).Where(o => !o.StartsWith("size=", StringComparison.Ordinal))
            .Append(SpecDefaults.ShmSizeOption(bytes)).ToList();
    };

    /// <summary>
    /// A bind mount of a host path (under Kata it reaches the guest over virtio-fs).
    /// Private propagation, so mounts made on either side never leak to the other.
    /// </summary>
    public static SpecOpt WithBindMount(string source, string destination, bool readOnly, bool recursive = true) =>
        WithMounts(new Mount
        {
            Destination = destination,
            Type = "bind",
            Source = source,
            Options = [recursive ? "rbind" : "bind", "rprivate", readOnly ? "ro" : "rw", "nosuid", "nodev"],
        });

    /// <summary>Appends mounts; a destination already mounted is an error at Generate (use <see cref="WithoutMount"/> first).</summary>
    public static SpecOpt WithMounts(params Mount[] mounts) => spec =>
    {
        spec.Mounts ??= [];
        spec.Mounts.AddRange(mounts);
    };

    /// <summary>Removes the mount at a destination, if any (e.g. to replace a default one).</summary>
    public static SpecOpt WithoutMount(string destination) => spec =>
    {
        var key = SpecValidator.NormalizeDestination(destination);
        spec.Mounts?.RemoveAll(m => SpecValidator.NormalizeDestination(m.Destination) == key);
    };

    // ---- namespaces ----------------------------------------------------------------------

    /// <summary>Adds a namespace, or replaces the one of that type; <paramref name="path"/> joins an existing one.</summary>
    public static SpecOpt WithNamespace(string type, string? path = null) => spec =>
    {
        var linux = EnsureLinux(spec);
        linux.Namespaces ??= [];
        var entry = new LinuxNamespace { Type = type, Path = path };
        var index = linux.Namespaces.FindIndex(n => n.Type == type);
        if (index >= 0)
            linux.Namespaces[index] = entry;
        else
            linux.Namespaces.Add(entry);
    };

    /// <summary>Joins the network namespace at <paramref name="path"/> (e.g. one CNI has wired).</summary>
    public static SpecOpt WithNetworkNamespacePath(string path) => WithNamespace(NamespaceTypes.Network, path);

    /// <summary>Drops a namespace type (the container then shares the host's; not allowed for network).</summary>
    public static SpecOpt WithoutNamespace(string type) => spec =>
        EnsureLinux(spec).Namespaces?.RemoveAll(n => n.Type == type);

    // ---- cgroup ---------------------------------------------------------------------------

    public static SpecOpt WithCgroupsPath(string path) => spec => EnsureLinux(spec).CgroupsPath = path;

    public static SpecOpt WithCpuShares(ulong shares) => spec => EnsureCpu(spec).Shares = shares;

    /// <summary>CFS bandwidth: <paramref name="quota"/> µs of CPU time per <paramref name="period"/> µs.</summary>
    public static SpecOpt WithCpuQuota(long quota, ulong period = 100_000) => spec =>
    {
        var cpu = EnsureCpu(spec);
        cpu.Quota = quota;
        cpu.Period = period;
    };

    /// <summary>CPU limit in cores (may be fractional): quota = cores × period. Kata sizes vCPUs from this.</summary>
    public static SpecOpt WithCpus(double cores, ulong period = 100_000)
    {
        if (!(cores > 0) || double.IsInfinity(cores))
            return _ => throw new InvalidSpecException($"linux.resources.cpu: {cores} cores is not a positive number");
        return WithCpuQuota((long)Math.Ceiling(cores * period), period);
    }

    /// <summary>Pins to CPUs (e.g. "0-3") and memory nodes (e.g. "0"). Not enforced inside a Kata guest.</summary>
    public static SpecOpt WithCpuset(string cpus, string? mems = null) => spec =>
    {
        var cpu = EnsureCpu(spec);
        cpu.Cpus = cpus;
        if (mems is not null)
            cpu.Mems = mems;
    };

    /// <summary>Memory limit in bytes; <paramref name="swap"/> is memory+swap (-1 = unlimited), omitted when null.</summary>
    public static SpecOpt WithMemoryLimit(long bytes, long? swap = null) => spec =>
    {
        var resources = EnsureResources(spec);
        resources.Memory ??= new LinuxMemory();
        resources.Memory.Limit = bytes;
        resources.Memory.Swap = swap;
    };

    /// <summary>Maximum number of tasks (-1 = unlimited). Not enforced inside a Kata guest.</summary>
    public static SpecOpt WithPidsLimit(long limit) => spec => EnsureResources(spec).Pids = new LinuxPids { Limit = limit };

    /// <summary>Allows a device in the device cgroup (e.g. an accelerator); a null minor means all minors.</summary>
    public static SpecOpt WithAllowedDevice(string type, long major, long? minor, string access = "rwm") => spec =>
    {
        var resources = EnsureResources(spec);
        resources.Devices ??= [];
        resources.Devices.Add(new LinuxDeviceCgroup { Allow = true, Type = type, Major = major, Minor = minor, Access = access });
    };

    // ---- security ------------------------------------------------------------------------

    /// <summary>
    /// The built-in profile (<see cref="SeccompProfiles.Default"/>), matched to the final
    /// capabilities; <paramref name="allowClone3"/> for runtimes that ignore errnoRet.
    /// </summary>
    public static SpecOpt WithDefaultSeccomp(bool allowClone3 = false) => spec =>
    {
        EnsureLinux(spec).Seccomp = SeccompProfiles.Default(spec.Process?.Capabilities?.Bounding ?? [], allowClone3);
        spec.SeccompIsDefault = true;
        spec.DefaultSeccompAllowsClone3 = allowClone3;
    };

    /// <summary>A caller-supplied profile, used as given.</summary>
    public static SpecOpt WithSeccomp(LinuxSeccomp profile) => spec =>
    {
        EnsureLinux(spec).Seccomp = profile;
        spec.SeccompIsDefault = false;
    };

    /// <summary>No seccomp filter at all (debugging only).</summary>
    public static SpecOpt WithoutSeccomp() => spec =>
    {
        EnsureLinux(spec).Seccomp = null;
        spec.SeccompIsDefault = false;
    };

    /// <summary>Adds paths to hide from the container.</summary>
    public static SpecOpt WithMaskedPaths(params string[] paths) => spec =>
    {
        var linux = EnsureLinux(spec);
        linux.MaskedPaths = (linux.MaskedPaths ?? []).Concat(paths).Distinct(StringComparer.Ordinal).ToList();
    };

    /// <summary>Adds paths to mount read-only.</summary>
    public static SpecOpt WithReadonlyPaths(params string[] paths) => spec =>
    {
        var linux = EnsureLinux(spec);
        linux.ReadonlyPaths = (linux.ReadonlyPaths ?? []).Concat(paths).Distinct(StringComparer.Ordinal).ToList();
    };

    /// <summary>Sets a namespaced sysctl (e.g. "net.ipv4.ip_unprivileged_port_start").</summary>
    public static SpecOpt WithSysctl(string key, string value) => spec =>
    {
        var linux = EnsureLinux(spec);
        linux.Sysctl ??= [];
        linux.Sysctl[key] = value;
    };

    // ---- annotations ---------------------------------------------------------------------

    public static SpecOpt WithAnnotation(string key, string value) => spec =>
    {
        spec.Annotations ??= [];
        spec.Annotations[key] = value;
    };

    public static SpecOpt WithAnnotations(IEnumerable<KeyValuePair<string, string>> annotations) => spec =>
    {
        spec.Annotations ??= [];
        foreach (var (key, value) in annotations)
            spec.Annotations[key] = value;
    };

    // ---- helpers -------------------------------------------------------------------------

    private static Process EnsureProcess(Spec spec) => spec.Process ??= new Process();

    private static Root EnsureRoot(Spec spec) => spec.Root ??= new Root();

    private static Linux EnsureLinux(Spec spec) => spec.Linux ??= new Linux();

    private static LinuxResources EnsureResources(Spec spec) => EnsureLinux(spec).Resources ??= new LinuxResources();

    private static LinuxCpu EnsureCpu(Spec spec) => EnsureResources(spec).Cpu ??= new LinuxCpu();
}
