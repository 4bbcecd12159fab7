using KataAgent.Containerd.Runtime;
using KataAgent.Core.Sessions;
using KataAgent.Oci;

namespace KataAgent.Core.Runtime;

/// <summary>
/// The runtime classes the agent knows, one entry each: the single source for the registry (create and recovery),
/// `kata-agent doctor` (checks and exit bits), the config loader (class names, config-path keys) and the example
/// config (a test compares them). Adding a class is one entry here (docs/RUNTIME_CLASSES.md).
/// Order matters: strongest sandbox first; when the default class cannot run, the agent falls back to the first
/// allowed, usable class in this order that isolates the kernel (never to runc).
/// </summary>
public static class RuntimeClassTable
{
    private const string KataShim = "containerd-shim-kata-v2";
    private const string KataRemedy = "install Kata Containers (kata-deploy or the distribution's kata-containers package)";

    public static readonly IReadOnlyList<RuntimeClassDefinition> All =
    [
        new()
        {
            Name = "kata",
            Kind = RuntimeKind.Vm,
            Description = "Kata Containers: a lightweight VM per session (the host's Kata config; QEMU by default)",
            DoctorExitBit = 1,
            ConfigPathKey = "kata_config_path",
            Runtime = (self, s) => RuntimeClass.Kata(self.ConfigPath(s.Options), self.Name),
            Checks = (_, _) =>
                KataVmChecks(HostChecks.Device("/dev/vhost-vsock", "load the vhost_vsock module (modprobe vhost_vsock); QEMU needs it")),
            SpecOptions = KataSizing,
            OverheadBytes = KataVmOverhead,
        },
        // Kata with Cloud Hypervisor: the same shim with kata-deploy's CLH config (kata-notes §1: kata-deploy's
        // io.containerd.kata-clh.v2 handler has no binary of its own). CLH talks to the guest over hybrid vsock (a unix
        // socket), so /dev/vhost-vsock is not needed (kata-notes §7); CI measured ~124 MiB per VM (§3).
        new()
        {
            Name = "kata-clh",
            Kind = RuntimeKind.Vm,
            Description = "Kata Containers with Cloud Hypervisor: a lightweight VM per session",
            DoctorExitBit = 32,
            ConfigPathKey = "kata_clh_config_path",
            DefaultConfigPath = "/opt/kata/share/defaults/kata-containers/runtimes/clh/configuration-clh.toml",
            Runtime = (self, s) => RuntimeClass.Kata(self.ConfigPath(s.Options), self.Name, self.Description),
            Checks = (self, options) =>
                KataVmChecks(HostChecks.ConfigFile(self.ConfigPath(options), $"install Kata's Cloud Hypervisor config (kata-deploy) or set runtime.{self.ConfigPathKey}")),
            SpecOptions = KataSizing,
            OverheadBytes = KataVmOverhead,
        },
        new()
        {
            Name = "gvisor",
            Kind = RuntimeKind.UserSpaceKernel,
            Description = "gVisor (runsc): user-space kernel sandbox",
            DoctorExitBit = 2,
            Runtime = (self, s) => RuntimeClass.Gvisor(s.GvisorWrapperPath, self.Name),
            Checks = (_, options) =>
            [
                RuncShimCheck(),
                File.Exists(options.RunscPath)
                    ? new HostCheck("runsc", true, options.RunscPath)
                    : new HostCheck("runsc", false, $"{options.RunscPath} not found: install the Debian package 'runsc'"),
            ],
        },
        new()
        {
            Name = "runc",
            Kind = RuntimeKind.SharedKernel,
            Description = "runc: Linux namespaces only, shares the host kernel (development only)",
            DoctorExitBit = 4,
            Runtime = (self, _) => RuntimeClass.Runc(self.Name),
            Checks = (_, _) =>
            [
                RuncShimCheck(),
                HostChecks.Executable("runc", "install the Debian package 'runc'"),
            ],
        },
    ];

    // gVisor runs through the runc shim too (with runsc as its binary).
    private static HostCheck RuncShimCheck() => HostChecks.Executable("containerd-shim-runc-v2", "install the Debian package 'containerd'");

    // What every Kata VM class needs of the host (the shim, KVM, the vhost modules), plus its hypervisor's own check.
    private static IReadOnlyList<HostCheck> KataVmChecks(HostCheck hypervisorCheck) =>
    [
        HostChecks.Executable(KataShim, KataRemedy),
        HostChecks.Kvm(),
        hypervisorCheck,
        HostChecks.Module("kvm"),
        HostChecks.Module("vhost"),
        HostChecks.Module("vhost_net"),
    ];

    private static IEnumerable<SpecOpt> KataSizing(SessionSpecInputs inputs) => SessionSpec.KataSizing(inputs.Record, inputs.Options.Kata);

    private static long KataVmOverhead(AgentOptions options) => options.Resources.KataVmOverheadBytes;

    /// <summary>The class names, in table order, for messages ("kata, kata-clh, gvisor, runc").</summary>
    public static string Names => string.Join(", ", All.Select(d => d.Name));

    public static RuntimeClassDefinition? Find(string name) => All.FirstOrDefault(d => d.Name == name);

    public static RuntimeClassDefinition Get(string name) =>
        Find(name) ?? throw new ArgumentException($"unknown runtime class '{name}' (known: {Names})", nameof(name));
}
