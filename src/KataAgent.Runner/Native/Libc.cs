using System.Runtime.InteropServices;

namespace KataAgent.Runner.Native;

/// <summary>
/// The few libc calls the runner needs. Only symbols that exist in glibc 2.31 (the guest floor) are
/// used; posix_spawn_file_actions_addchdir_np is the newest (2.29).
/// </summary>
internal static unsafe partial class Libc
{
    private const string LibraryName = "libc";

    public const int EINTR = 4;
    public const int ECHILD = 10;
    public const int EAGAIN = 11;
    public const int EPIPE = 32;

    public const int SIGINT = 2;
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;

    public const int O_RDONLY = 0;
    public const int O_RDWR = 2;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;

    public const int F_GETFL = 3;
    public const int F_SETFL = 4;
    public const int F_DUPFD_CLOEXEC = 1030;

    public const short POLLIN = 0x1;
    public const short POLLERR = 0x8;
    public const short POLLHUP = 0x10;
    public const short POLLNVAL = 0x20;

    public const short POSIX_SPAWN_SETSIGDEF = 0x04;
    public const short POSIX_SPAWN_SETSIGMASK = 0x08;
    public const short POSIX_SPAWN_SETSID = 0x80;

    public const int PR_SET_CHILD_SUBREAPER = 36;
    public const int PR_SET_PDEATHSIG = 1;

    public const int WNOHANG = 1;
    public const int SOL_SOCKET = 1;
    public const int SO_LINGER = 13;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short ReturnedEvents;
    }

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int pipe2(int* fds, int flags);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial nint read(int fd, byte* buffer, nint count);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial nint write(int fd, byte* buffer, nint count);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int poll(PollFd* fds, nuint count, int timeoutMilliseconds);

    [StructLayout(LayoutKind.Sequential)]
    public struct Linger
    {
        public int OnOff;
        public int Seconds;
    }

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int setsockopt(int fd, int level, int option, void* value, uint length);

    [LibraryImport(LibraryName, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int fcntl(int fd, int command, int argument);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int kill(int pid, int signal);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int waitpid(int pid, int* status, int options);

    [LibraryImport(LibraryName)]
    public static partial int getpid();

    [LibraryImport(LibraryName)]
    public static partial int getuid();

    [LibraryImport(LibraryName)]
    public static partial int getgid();

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int setuid(int uid);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int setgid(int gid);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int setgroups(nuint size, int* groups);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport(LibraryName)]
    public static partial byte* gnu_get_libc_version();

    [LibraryImport(LibraryName)]
    public static partial byte* strerror(int errorNumber);

    // posix_spawn and helpers. The attribute and file-action objects are opaque; they are allocated
    // with generous room (glibc uses 336 and 80 bytes on x86_64).
    public const int SpawnObjectSize = 1024;
    public const int SigSetSize = 128;

    [LibraryImport(LibraryName)]
    public static partial int posix_spawn(int* pid, byte* path, void* fileActions, void* attributes, byte** argv, byte** envp);

    [LibraryImport(LibraryName)]
    public static partial int posix_spawnp(int* pid, byte* file, void* fileActions, void* attributes, byte** argv, byte** envp);

    [LibraryImport(LibraryName)]
    public static partial int posix_spawn_file_actions_init(void* fileActions);

    [LibraryImport(LibraryName)]
    public static partial int posix_spawn_file_actions_destroy(void* fileActions);

    [LibraryImport(LibraryName)]
    public static partial int posix_spawn_file_actions_adddup2(void* fileActions, int fd, int newFd);

    [LibraryImport(LibraryName)]
    public static partial int posix_spawn_file_actions_addopen(void* fileActions, int fd, byte* path, int openFlags, int mode);

    [LibraryImport(LibraryName)]
    public static partial int posix_spawn_file_actions_addchdir_np(void* fileActions, byte* path);

    [LibraryImport(LibraryName)]
    public static partial int posix_spawnattr_init(void* attributes);

    [LibraryImport(LibraryName)]
    public static partial int posix_spawnattr_destroy(void* attributes);

    [LibraryImport(LibraryName)]
    public static partial int posix_spawnattr_setflags(void* attributes, short flags);

    [LibraryImport(LibraryName)]
    public static partial int posix_spawnattr_setsigmask(void* attributes, void* signalSet);

    [LibraryImport(LibraryName)]
    public static partial int posix_spawnattr_setsigdefault(void* attributes, void* signalSet);

    [LibraryImport(LibraryName)]
    public static partial int sigemptyset(void* signalSet);

    [LibraryImport(LibraryName)]
    public static partial int sigfillset(void* signalSet);

    public static string ErrorText(int errorNumber) =>
        Marshal.PtrToStringUTF8((nint)strerror(errorNumber)) ?? $"errno {errorNumber}";

    public static string LibcVersion() => Marshal.PtrToStringUTF8((nint)gnu_get_libc_version()) ?? "unknown";

    /// <summary>Exit status as Backend.AI's runner (Python's returncode) reports it: the code, or -signal number.</summary>
    public static int DecodeWaitStatus(int status)
    {
        int signal = status & 0x7f;
        return signal == 0 ? (status >> 8) & 0xff : -signal;
    }
}
