using System.Runtime.InteropServices;

namespace KataAgent.Core.HostDirectories;

/// <summary>What <see cref="ScratchRootMount.Ensure"/> found and did.</summary>
public enum ScratchRootMountResult
{
    /// <summary>The scratch root was already a mount with nosuid and nodev (an earlier start, or the operator's own mount).</summary>
    AlreadyHardened,
    /// <summary>It was not a mount point: the agent bind-mounted it onto itself with nosuid,nodev.</summary>
    BoundOntoItself,
    /// <summary>It was a mount point without the flags: the agent remounted it with them added.</summary>
    FlagsAdded,
}

/// <summary>
/// The scratch root (shared read-write with hostile guests) as a mount of its own with <c>nosuid,nodev</c>: a setuid
/// binary or a device node a guest leaves there means nothing on the host, even to root. The agent makes it at start
/// (a bind mount of the directory onto itself, made private so nothing propagates in or out) and never unmounts it:
/// sessions outlive the agent, and so must the flags. Idempotent: a start that finds it in place does nothing.
/// Not <c>noexec</c>: a bind mount passes its flags on to the runc container's /home/work, where users run
/// their own programs (docs/HOST_HARDENING.md).
/// </summary>
public static partial class ScratchRootMount
{
    public static readonly IReadOnlyList<string> RequiredOptions = ["nosuid", "nodev"];

    private const ulong MS_RDONLY = 0x1;
    private const ulong MS_NOSUID = 0x2;
    private const ulong MS_NODEV = 0x4;
    private const ulong MS_NOEXEC = 0x8;
    private const ulong MS_REMOUNT = 0x20;
    private const ulong MS_NOATIME = 0x400;
    private const ulong MS_NODIRATIME = 0x800;
    private const ulong MS_BIND = 0x1000;
    private const ulong MS_PRIVATE = 0x40000;
    private const ulong MS_RELATIME = 0x200000;
    private const ulong MS_STRICTATIME = 0x1000000;
    private const int MNT_DETACH = 2;

    /// <summary>The mount the scratch root is on, and whether it is one of its own with the required flags.</summary>
    public static (MountEntry? Mount, bool IsOwnMountPoint, bool Hardened) Inspect(string scratchRoot)
    {
        var full = RealPath(scratchRoot);
        var mount = MountTable.Containing(MountTable.Read(), full);
        var own = mount is not null && mount.MountPoint.TrimEnd('/') == full;
        return (mount, own, mount is not null && RequiredOptions.All(mount.Has));
    }

    /// <summary>Makes the scratch root a nosuid,nodev mount (see the type's summary). Throws, naming the path, when the kernel refuses.</summary>
    public static ScratchRootMountResult Ensure(string scratchRoot)
    {
        if (!Directory.Exists(scratchRoot))
            throw new DirectoryNotFoundException($"scratch root {scratchRoot} does not exist");
        var full = RealPath(scratchRoot);
        var (mount, own, hardened) = Inspect(full);
        if (own && hardened)
            return ScratchRootMountResult.AlreadyHardened;
        var bound = false;
        if (!own)
        {
            Mount(full, full, MS_BIND, "bind-mount the scratch root onto itself");
            bound = true;
            mount = Inspect(full).Mount;
        }
        try
        {
            if (bound)
                Mount(null, full, MS_PRIVATE, "make the scratch root's mount private");
            // A bind remount sets every per-mount flag at once: keep the ones it had (read-only, noexec, atime).
            Mount(null, full, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | KeptFlags(mount!), "remount the scratch root nosuid,nodev");
        }
        catch
        {
            if (bound)
                _ = Umount2(full, MNT_DETACH);
            throw;
        }
        if (!Inspect(full).Hardened)
            throw new IOException($"scratch root {full}: remounted nosuid,nodev but /proc/self/mountinfo does not show the flags");
        return bound ? ScratchRootMountResult.BoundOntoItself : ScratchRootMountResult.FlagsAdded;
    }

    /// <summary>
    /// Lazily unmounts the scratch root's own mount, for whoever removes a data dir for good (tests, benchmarks,
    /// uninstall); the agent itself never does. Returns whether there was one.
    /// </summary>
    public static bool Remove(string scratchRoot)
    {
        if (!Directory.Exists(scratchRoot) || !Inspect(scratchRoot).IsOwnMountPoint)
            return false;
        var full = RealPath(scratchRoot);
        if (Umount2(full, MNT_DETACH) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"cannot unmount {full}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", errno);
        }
        return true;
    }

    /// <summary>mountinfo names mounts by their real path: resolve links in the configured one (a /tmp or /var that is a link).</summary>
    public static string RealPath(string path)
    {
        var full = Path.GetFullPath(path);
        var resolved = RealPathCall(full, 0);
        if (resolved == 0)
            return full.TrimEnd('/') is { Length: > 0 } trimmed ? trimmed : "/";
        try
        {
            return Marshal.PtrToStringUTF8(resolved)!;
        }
        finally
        {
            Free(resolved);
        }
    }

    private static ulong KeptFlags(MountEntry mount)
    {
        ulong flags = 0;
        if (mount.Has("ro")) flags |= MS_RDONLY;
        if (mount.Has("noexec")) flags |= MS_NOEXEC;
        if (mount.Has("noatime")) flags |= MS_NOATIME;
        if (mount.Has("nodiratime")) flags |= MS_NODIRATIME;
        if (mount.Has("relatime")) flags |= MS_RELATIME;
        if (!mount.Has("noatime") && !mount.Has("relatime")) flags |= MS_STRICTATIME;
        return flags;
    }

    private static void Mount(string? source, string target, ulong flags, string what)
    {
        if (MountCall(source, target, null, (nuint)flags, 0) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"cannot {what} ({target}): {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}); the agent must run as root", errno);
        }
    }

    [LibraryImport("libc", EntryPoint = "mount", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MountCall(string? source, string target, string? fsType, nuint flags, nint data);

    [LibraryImport("libc", EntryPoint = "realpath", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint RealPathCall(string path, nint resolved);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(nint pointer);

    [LibraryImport("libc", EntryPoint = "umount2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Umount2(string target, int flags);
}
