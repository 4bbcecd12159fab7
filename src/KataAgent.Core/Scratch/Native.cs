using System.Runtime.InteropServices;

namespace KataAgent.Core.Scratch;

/// <summary>
/// The libc calls the scratch code needs to work relative to directory fds. .NET's path APIs
/// resolve whole paths and follow symlinks, which is exactly what a guest-controlled tree forbids.
/// </summary>
internal static unsafe partial class Native
{
    private const string Libc = "libc";

    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int EACCES = 13;
    public const int EEXIST = 17;
    public const int EXDEV = 18;
    public const int ENOTDIR = 20;
    public const int EISDIR = 21;
    public const int EINVAL = 22;
    public const int EPERM = 1;
    public const int ENAMETOOLONG = 36;
    public const int ENOSYS = 38;
    public const int ENOTEMPTY = 39;
    public const int ELOOP = 40;
    public const int EOPNOTSUPP = 95;

    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_NOCTTY = 0x100;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;
    public const int O_PATH = 0x200000;

    // These two differ between the x86 and the asm-generic (arm64, riscv64) numbering.
    public static readonly int O_DIRECTORY = IsAsmGeneric ? 0x4000 : 0x10000;
    public static readonly int O_NOFOLLOW = IsAsmGeneric ? 0x8000 : 0x20000;

    private static bool IsAsmGeneric => RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.RiscV64 or Architecture.LoongArch64;

    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const int AT_REMOVEDIR = 0x200;
    public const int AT_EMPTY_PATH = 0x1000;

    public const ulong RESOLVE_NO_MAGICLINKS = 0x02;
    public const ulong RESOLVE_NO_SYMLINKS = 0x04;
    public const ulong RESOLVE_BENEATH = 0x08;

    public const uint STATX_BASIC_STATS = 0x7ff;

    public const int S_IFMT = 0xF000;
    public const int S_IFIFO = 0x1000;
    public const int S_IFCHR = 0x2000;
    public const int S_IFDIR = 0x4000;
    public const int S_IFBLK = 0x6000;
    public const int S_IFREG = 0x8000;
    public const int S_IFLNK = 0xA000;
    public const int S_IFSOCK = 0xC000;

    // openat2 has the same number on every architecture (it is newer than the unified table).
    private const long SYS_openat2 = 437;

    [StructLayout(LayoutKind.Sequential)]
    public struct OpenHow
    {
        public ulong Flags;
        public ulong Mode;
        public ulong Resolve;
    }

    public struct StatxTimestamp
    {
        public long Seconds;
        public uint Nanoseconds;
        public int Reserved;
    }

    /// <summary>struct statx: the same layout on every architecture, unlike struct stat.</summary>
    [StructLayout(LayoutKind.Sequential, Size = 256)]
    public struct Statx
    {
        public uint Mask;
        public uint BlockSize;
        public ulong Attributes;
        public uint NLink;
        public uint Uid;
        public uint Gid;
        public ushort Mode;
        public ushort Spare0;
        public ulong Ino;
        public ulong Size;
        public ulong Blocks;
        public ulong AttributesMask;
        public StatxTimestamp ATime;
        public StatxTimestamp BTime;
        public StatxTimestamp CTime;
        public StatxTimestamp MTime;
        public uint RdevMajor;
        public uint RdevMinor;
        public uint DevMajor;
        public uint DevMinor;

        public readonly int FileType => Mode & S_IFMT;
        public readonly bool IsDirectory => FileType == S_IFDIR;
        public readonly bool IsRegular => FileType == S_IFREG;
        public readonly bool IsSymlink => FileType == S_IFLNK;
        public readonly bool SameInode(in Statx other) =>
            Ino == other.Ino && DevMajor == other.DevMajor && DevMinor == other.DevMinor;
        public readonly bool SameDevice(in Statx other) => DevMajor == other.DevMajor && DevMinor == other.DevMinor;
    }

    [LibraryImport(Libc, EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall4(long number, long a1, long a2, long a3, long a4);

    public static int OpenAt2(int dirFd, string path, in OpenHow how)
    {
        var bytes = Utf8Z(path);
        fixed (byte* p = bytes)
        fixed (OpenHow* h = &how)
            return (int)Syscall4(SYS_openat2, dirFd, (long)p, (long)h, sizeof(OpenHow));
    }

    [LibraryImport(Libc, EntryPoint = "openat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int OpenAt(int dirFd, string path, int flags, uint mode);

    [LibraryImport(Libc, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Libc, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int StatxAt(int dirFd, string path, int flags, uint mask, out Statx buffer);

    [LibraryImport(Libc, EntryPoint = "mkdirat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int MkdirAt(int dirFd, string path, uint mode);

    [LibraryImport(Libc, EntryPoint = "unlinkat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int UnlinkAt(int dirFd, string path, int flags);

    [LibraryImport(Libc, EntryPoint = "renameat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int RenameAt(int oldDirFd, string oldPath, int newDirFd, string newPath);

    [LibraryImport(Libc, EntryPoint = "readlinkat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint ReadlinkAt(int dirFd, string path, byte* buffer, nint size);

    [LibraryImport(Libc, EntryPoint = "fchown", SetLastError = true)]
    public static partial int Fchown(int fd, uint uid, uint gid);

    [LibraryImport(Libc, EntryPoint = "fchmod", SetLastError = true)]
    public static partial int Fchmod(int fd, uint mode);

    [LibraryImport(Libc, EntryPoint = "geteuid")]
    public static partial uint GetEuid();

    [LibraryImport(Libc, EntryPoint = "fdopendir", SetLastError = true)]
    private static partial nint FdOpenDir(int fd);

    [LibraryImport(Libc, EntryPoint = "readdir64", SetLastError = true)]
    private static partial nint ReadDir(nint dir);

    [LibraryImport(Libc, EntryPoint = "closedir", SetLastError = true)]
    private static partial int CloseDir(nint dir);

    public static byte[] Utf8Z(string s)
    {
        var bytes = new byte[System.Text.Encoding.UTF8.GetByteCount(s) + 1];
        System.Text.Encoding.UTF8.GetBytes(s, bytes);
        return bytes;
    }

    public static string? ReadLink(int dirFd, string name)
    {
        var buffer = new byte[4096];
        fixed (byte* b = buffer)
        {
            var n = ReadlinkAt(dirFd, name, b, buffer.Length);
            if (n < 0)
                return null;
            return System.Text.Encoding.UTF8.GetString(buffer, 0, (int)n);
        }
    }

    /// <summary>
    /// Names in a directory (without . and ..). Reads through a fresh open of "." so the caller's fd
    /// keeps its own offset and stays open.
    /// </summary>
    /// <summary>
    /// The names in a directory (without . and ..), read lazily in readdir's order: a directory of
    /// millions of entries is never held in memory, and a caller can stop early.
    /// </summary>
    public static IEnumerable<string> EnumerateDirectory(int dirFd)
    {
        var fd = OpenAt(dirFd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (fd < 0)
            throw Errno.Exception(Marshal.GetLastPInvokeError(), "open directory for reading");
        var dir = FdOpenDir(fd);
        if (dir == 0)
        {
            var err = Marshal.GetLastPInvokeError();
            Close(fd);
            throw Errno.Exception(err, "fdopendir");
        }
        return Read(dir);

        static IEnumerable<string> Read(nint dir)
        {
            try
            {
                while (true)
                {
                    var entry = ReadDir(dir);
                    if (entry == 0)
                    {
                        var err = Marshal.GetLastPInvokeError();
                        if (err != 0)
                            throw Errno.Exception(err, "readdir");
                        yield break;
                    }
                    // struct dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
                    var name = Marshal.PtrToStringUTF8(entry + 19)!;
                    if (name is not "." and not "..")
                        yield return name;
                }
            }
            finally
            {
                CloseDir(dir);
            }
        }
    }
}

internal static class Errno
{
    public static IOException Exception(int errno, string what) =>
        new($"{what}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", errno);
}

/// <summary>An owned file descriptor (directory or O_PATH), closed exactly once.</summary>
internal sealed class UnixFd : SafeHandle
{
    public UnixFd(int fd) : base(-1, ownsHandle: true) => SetHandle(fd);

    public override bool IsInvalid => handle == -1;

    public int Fd => (int)handle;

    protected override bool ReleaseHandle() => Native.Close((int)handle) == 0;

    public Native.Statx Stat()
    {
        if (Native.StatxAt(Fd, "", Native.AT_EMPTY_PATH | Native.AT_SYMLINK_NOFOLLOW, Native.STATX_BASIC_STATS, out var st) != 0)
            throw Errno.Exception(Marshal.GetLastPInvokeError(), "fstat");
        return st;
    }
}
