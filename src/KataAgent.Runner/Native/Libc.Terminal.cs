using System.Runtime.InteropServices;

namespace KataAgent.Runner.Native;

/// <summary>Pseudo-terminal calls for commands started with a PTY (all in libc itself, glibc 2.31 included).</summary>
internal static unsafe partial class Libc
{
    public const int O_NOCTTY = 0x100;
    public const nuint TIOCSWINSZ = 0x5414;
    public const nuint TIOCGWINSZ = 0x5413;

    [StructLayout(LayoutKind.Sequential)]
    public struct WindowSize
    {
        public ushort Rows;
        public ushort Columns;
        public ushort XPixels;
        public ushort YPixels;
    }

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int posix_openpt(int flags);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int grantpt(int fd);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int unlockpt(int fd);

    [LibraryImport(LibraryName)]
    public static partial int ptsname_r(int fd, byte* buffer, nuint length);

    [LibraryImport(LibraryName, EntryPoint = "open", SetLastError = true)]
    public static partial int open(byte* path, int flags);

    [LibraryImport(LibraryName, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int ioctl(int fd, nuint request, WindowSize* size);
}
