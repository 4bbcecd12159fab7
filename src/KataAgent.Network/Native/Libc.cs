using System.Runtime.InteropServices;

namespace KataAgent.Network.Native;

/// <summary>The libc calls needed to create, enter and remove network namespaces.</summary>
internal static unsafe partial class Libc
{
    private const string LibraryName = "libc";

    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int EEXIST = 17;
    public const int EINVAL = 22;

    public const int CLONE_NEWNET = 0x40000000;

    public const int O_RDONLY = 0;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_CLOEXEC = 0x80000;

    public const ulong MS_BIND = 4096;
    public const ulong MS_REC = 16384;
    public const ulong MS_SHARED = 1 << 20;
    public const int MNT_DETACH = 2;

    public const int AF_INET = 2;
    public const int SOCK_DGRAM = 2;
    public const int SOCK_CLOEXEC = 0x80000;
    public const ulong SIOCGIFFLAGS = 0x8913;
    public const ulong SIOCSIFFLAGS = 0x8914;
    public const short IFF_UP = 0x1;

    /// <summary>struct ifreq: 16-byte name followed by a 24-byte union (40 bytes on 64-bit Linux).</summary>
    [StructLayout(LayoutKind.Sequential, Size = 40)]
    public struct IfReq
    {
        public fixed byte Name[16];
        public short Flags;
    }

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int unshare(int flags);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int setns(int fd, int nstype);

    [LibraryImport(LibraryName, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, int mode);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport(LibraryName, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mount(string? source, string target, string? fileSystemType, ulong flags, nint data);

    [LibraryImport(LibraryName, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int ioctl(int fd, ulong request, IfReq* argument);

    /// <summary>Turns the last errno into an exception that names the call and the path involved.</summary>
    public static NetworkNamespaceException Error(string what) => Error(what, Marshal.GetLastPInvokeError());

    public static NetworkNamespaceException Error(string what, int errno) =>
        new($"{what}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", errno);
}
