using System.Runtime.InteropServices;

namespace KataAgent.Core.Runtime;

/// <summary>One readiness check: what was looked at, whether it passed, and what to do if not.</summary>
public sealed record HostCheck(string Name, bool Ok, string Detail);

/// <summary>Host readiness checks; which ones each runtime class needs is in its RuntimeClassTable entry (kata-notes §7).</summary>
public static partial class HostChecks
{
    private const uint KvmCreateVm = 0xAE01;

    /// <summary>A device node the runtime needs (e.g. /dev/vhost-vsock for QEMU).</summary>
    public static HostCheck Device(string path, string remedy) =>
        File.Exists(path) ? new HostCheck(path, true, "present") : new HostCheck(path, false, $"missing: {remedy}");

    /// <summary>A runtime configuration file the class names (a Kata flavour's hypervisor config).</summary>
    public static HostCheck ConfigFile(string path, string remedy) =>
        File.Exists(path) ? new HostCheck("config", true, path) : new HostCheck("config", false, $"{path} not found: {remedy}");

    public static HostCheck Executable(string name, string remedy)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").Split(':'))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
                return new HostCheck(name, true, candidate);
        }
        return new HostCheck(name, false, $"not on PATH: {remedy}");
    }

    public static HostCheck Module(string name) =>
        Directory.Exists($"/sys/module/{name}")
            ? new HostCheck($"module {name}", true, "loaded")
            : new HostCheck($"module {name}", false, $"not loaded: modprobe {name}");

    /// <summary>/dev/kvm must open read-write and KVM_CREATE_VM must succeed (EBUSY: another hypervisor holds VT-x).</summary>
    public static HostCheck Kvm()
    {
        const string device = "/dev/kvm";
        if (!File.Exists(device))
            return new HostCheck(device, false, "missing: the host has no KVM (enable virtualisation, load kvm_intel/kvm_amd, or use nested virtualisation)");
        var fd = Open(device, 2 /* O_RDWR */ | 0x80000 /* O_CLOEXEC */);
        if (fd < 0)
            return new HostCheck(device, false, $"cannot open read-write (errno {Marshal.GetLastPInvokeError()}): check permissions");
        try
        {
            var vm = Ioctl(fd, KvmCreateVm, 0);
            if (vm < 0)
                return new HostCheck(device, false, $"KVM_CREATE_VM failed (errno {Marshal.GetLastPInvokeError()}); EBUSY means another hypervisor is active");
            _ = Close(vm);
            return new HostCheck(device, true, "KVM_CREATE_VM works");
        }
        finally
        {
            _ = Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int Ioctl(int fd, nuint request, nint arg);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
