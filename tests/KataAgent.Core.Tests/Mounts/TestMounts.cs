using System.Runtime.InteropServices;

namespace KataAgent.Core.Tests.Mounts;

/// <summary>libc calls the mount tests need to build their own host trees (tmpfs submounts, inode numbers).</summary>
internal static unsafe partial class TestMounts
{
    private const int AtFdCwd = -100;

    [LibraryImport("libc", EntryPoint = "mount", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MountNative(string source, string target, string type, ulong flags, string? data);

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Statx(int dirFd, string path, int flags, uint mask, byte* buffer);

    /// <summary>Mounts a small tmpfs at <paramref name="target"/> (the test's own; removed with its data dir).</summary>
    public static void Tmpfs(string target)
    {
        if (MountNative("tmpfs", target, "tmpfs", 0, "size=1m") != 0)
            throw new IOException($"mount tmpfs on {target}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
    }

    public static ulong InodeOf(string path)
    {
        var buffer = stackalloc byte[256];
        if (Statx(AtFdCwd, path, 0x100 /* AT_SYMLINK_NOFOLLOW */, 0x100 /* STATX_INO */, buffer) != 0)
            throw new IOException($"statx {path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        return *(ulong*)(buffer + 32);
    }
}
