using System.Runtime.InteropServices;

namespace KataAgent.Core.Mounts;

/// <summary>The mount-table calls the staging code needs (mount(2), umount2(2), mount_setattr(2)).</summary>
internal static unsafe partial class MountNative
{
    private const string Libc = "libc";

    public const ulong MS_RDONLY = 0x1;
    public const ulong MS_NOSUID = 0x2;
    public const ulong MS_NODEV = 0x4;
    public const ulong MS_NOEXEC = 0x8;
    public const ulong MS_REMOUNT = 0x20;
    public const ulong MS_NOATIME = 0x400;
    public const ulong MS_NODIRATIME = 0x800;
    public const ulong MS_BIND = 0x1000;
    public const ulong MS_REC = 0x4000;
    public const ulong MS_UNBINDABLE = 1UL << 17;
    public const ulong MS_PRIVATE = 1UL << 18;
    public const ulong MS_RELATIME = 1UL << 21;
    public const ulong MS_STRICTATIME = 1UL << 24;

    public const int MNT_DETACH = 0x2;
    public const int UMOUNT_NOFOLLOW = 0x8;

    public const ulong MOUNT_ATTR_RDONLY = 0x1;
    public const uint AT_SYMLINK_NOFOLLOW = 0x100;
    public const uint AT_RECURSIVE = 0x8000;

    public const int EINVAL = 22;
    public const int ENOSYS = 38;
    public const int EPERM = 1;

    // mount_setattr is newer than the unified syscall table: the same number everywhere.
    private const long SYS_mount_setattr = 442;

    [StructLayout(LayoutKind.Sequential)]
    public struct MountAttr
    {
        public ulong AttrSet;
        public ulong AttrClear;
        public ulong Propagation;
        public ulong UsernsFd;
    }

    [LibraryImport(Libc, EntryPoint = "mount", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Mount(string? source, string target, string? fileSystemType, ulong flags, nint data);

    [LibraryImport(Libc, EntryPoint = "umount2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Umount2(string target, int flags);

    [LibraryImport(Libc, EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall5(long number, long a1, long a2, long a3, long a4, long a5);

    public static int MountSetattr(string path, uint flags, in MountAttr attr)
    {
        var bytes = Scratch.Native.Utf8Z(path);
        fixed (byte* p = bytes)
        fixed (MountAttr* a = &attr)
            return (int)Syscall5(SYS_mount_setattr, -100, (long)p, flags, (long)a, sizeof(MountAttr));
    }

    public static IOException Error(string what) => Scratch.Errno.Exception(Marshal.GetLastPInvokeError(), what);
}
