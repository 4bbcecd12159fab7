using System.Runtime.InteropServices;
using System.Text;
using KataAgent.Runner.Native;

namespace KataAgent.Runner.Processes;

/// <summary>
/// Starts children with posix_spawn (fork is unsafe in a multi-threaded runtime). Each child gets a
/// new session, default signal dispositions (the .NET runtime ignores SIGPIPE, which a child must not
/// inherit) and an empty signal mask.
/// </summary>
internal static unsafe class ProcessSpawner
{
    // Pipe ends handed to a child are moved to descriptors >= this first, so dup2 onto 0..4 can never
    // overwrite a source that is still needed.
    private const int HighDescriptorFloor = 10;

    public static ChildProcess Start(ProcessStartSpec spec)
    {
        var parentEnds = new List<int>();
        var childEnds = new List<int>();
        try
        {
            (int stdinRead, int stdinWrite) = spec.RedirectStdin ? CreatePipe(childEnds, parentEnds, childReads: true) : (-1, -1);
            bool onTerminal = spec.TerminalPath is not null;
            (int stdoutRead, int stdoutWrite) = onTerminal ? (-1, -1) : CreatePipe(childEnds, parentEnds, childReads: false);
            (int stderrRead, int stderrWrite) = onTerminal ? (-1, -1) : CreatePipe(childEnds, parentEnds, childReads: false);
            (int controlRead, int controlWrite) = spec.WithControlChannel ? CreatePipe(childEnds, parentEnds, childReads: true) : (-1, -1);
            (int eventsRead, int eventsWrite) = spec.WithControlChannel ? CreatePipe(childEnds, parentEnds, childReads: false) : (-1, -1);

            var redirections = onTerminal ? [] : new List<(int Source, int Target)> { (stdoutWrite, 1), (stderrWrite, 2) };
            if (stdinRead >= 0)
            {
                redirections.Add((stdinRead, 0));
            }
            if (controlRead >= 0)
            {
                redirections.Add((controlRead, 3));
                redirections.Add((eventsWrite, 4));
            }

            int pid = Spawn(spec, redirections, out Task<int> exited);
            foreach (int fd in childEnds)
            {
                _ = Libc.close(fd);
            }
            childEnds.Clear();
            parentEnds.Clear();
            return new ChildProcess
            {
                Pid = pid,
                Exited = exited,
                StdinFd = stdinWrite,
                StdoutFd = stdoutRead,
                StderrFd = stderrRead,
                ControlWriteFd = controlWrite,
                EventsReadFd = eventsRead,
            };
        }
        finally
        {
            foreach (int fd in childEnds.Concat(parentEnds))
            {
                _ = Libc.close(fd);
            }
        }
    }

    private static (int Read, int Write) CreatePipe(List<int> childEnds, List<int> parentEnds, bool childReads)
    {
        int* fds = stackalloc int[2];
        if (Libc.pipe2(fds, Libc.O_CLOEXEC) != 0)
        {
            throw new IOException($"pipe2 failed: {Libc.ErrorText(Marshal.GetLastPInvokeError())}");
        }
        int read = fds[0], write = fds[1];
        if (childReads)
        {
            read = MoveHigh(read);
            childEnds.Add(read);
            parentEnds.Add(write);
        }
        else
        {
            write = MoveHigh(write);
            childEnds.Add(write);
            parentEnds.Add(read);
        }
        return (read, write);
    }

    private static int MoveHigh(int fd)
    {
        int high = Libc.fcntl(fd, Libc.F_DUPFD_CLOEXEC, HighDescriptorFloor);
        int error = Marshal.GetLastPInvokeError();
        _ = Libc.close(fd);
        if (high < 0)
        {
            throw new IOException($"fcntl(F_DUPFD_CLOEXEC) failed: {Libc.ErrorText(error)}");
        }
        return high;
    }

    private static int Spawn(ProcessStartSpec spec, List<(int Source, int Target)> redirections, out Task<int> exited)
    {
        using var executable = new NativeUtf8Strings([spec.Executable]);
        using var argv = new NativeUtf8Strings(spec.Arguments);
        using var envp = new NativeUtf8Strings(spec.Environment.Select(pair => $"{pair.Key}={pair.Value}").ToList());
        using var workingDirectory = new NativeUtf8Strings(spec.WorkingDirectory is null ? [] : [spec.WorkingDirectory]);
        using var devNull = new NativeUtf8Strings(["/dev/null"]);
        using var terminal = new NativeUtf8Strings(spec.TerminalPath is null ? [] : [spec.TerminalPath]);

        void* fileActions = NativeMemory.AllocZeroed(Libc.SpawnObjectSize);
        void* attributes = NativeMemory.AllocZeroed(Libc.SpawnObjectSize);
        void* emptySet = NativeMemory.AllocZeroed(Libc.SigSetSize);
        void* allSignals = NativeMemory.AllocZeroed(Libc.SigSetSize);
        try
        {
            Check(Libc.posix_spawn_file_actions_init(fileActions), "posix_spawn_file_actions_init");
            Check(Libc.posix_spawnattr_init(attributes), "posix_spawnattr_init");
            try
            {
                foreach ((int source, int target) in redirections)
                {
                    Check(Libc.posix_spawn_file_actions_adddup2(fileActions, source, target), "adddup2");
                }
                if (spec.TerminalPath is not null)
                {
                    // Opened without O_NOCTTY by the new session's leader: it becomes the controlling terminal.
                    Check(Libc.posix_spawn_file_actions_addopen(fileActions, 0, terminal.Pointers[0], Libc.O_RDWR, 0), "addopen terminal");
                    Check(Libc.posix_spawn_file_actions_adddup2(fileActions, 0, 1), "adddup2");
                    Check(Libc.posix_spawn_file_actions_adddup2(fileActions, 0, 2), "adddup2");
                }
                else if (!redirections.Any(r => r.Target == 0))
                {
                    Check(Libc.posix_spawn_file_actions_addopen(fileActions, 0, devNull.Pointers[0], Libc.O_RDONLY, 0), "addopen");
                }
                if (spec.WorkingDirectory is not null)
                {
                    Check(Libc.posix_spawn_file_actions_addchdir_np(fileActions, workingDirectory.Pointers[0]), "addchdir_np");
                }
                _ = Libc.sigemptyset(emptySet);
                _ = Libc.sigfillset(allSignals);
                Check(Libc.posix_spawnattr_setsigmask(attributes, emptySet), "setsigmask");
                Check(Libc.posix_spawnattr_setsigdefault(attributes, allSignals), "setsigdefault");
                Check(Libc.posix_spawnattr_setflags(attributes,
                    (short)(Libc.POSIX_SPAWN_SETSID | Libc.POSIX_SPAWN_SETSIGDEF | Libc.POSIX_SPAWN_SETSIGMASK)), "setflags");

                int pid;
                bool searchPath = !spec.Executable.Contains('/', StringComparison.Ordinal);
                lock (ChildReaper.Instance.SpawnGate)
                {
                    int result = searchPath
                        ? Libc.posix_spawnp(&pid, executable.Pointers[0], fileActions, attributes, argv.Pointers, envp.Pointers)
                        : Libc.posix_spawn(&pid, executable.Pointers[0], fileActions, attributes, argv.Pointers, envp.Pointers);
                    if (result != 0)
                    {
                        throw new IOException($"cannot start {spec.Executable}: {Libc.ErrorText(result)}");
                    }
                    exited = ChildReaper.Instance.Register(pid);
                }
                return pid;
            }
            finally
            {
                _ = Libc.posix_spawn_file_actions_destroy(fileActions);
                _ = Libc.posix_spawnattr_destroy(attributes);
            }
        }
        finally
        {
            NativeMemory.Free(fileActions);
            NativeMemory.Free(attributes);
            NativeMemory.Free(emptySet);
            NativeMemory.Free(allSignals);
        }
    }

    private static void Check(int result, string what)
    {
        if (result != 0)
        {
            throw new IOException($"{what} failed: {Libc.ErrorText(result)}");
        }
    }

    /// <summary>A NULL-terminated array of NUL-terminated UTF-8 strings in native memory.</summary>
    private sealed class NativeUtf8Strings : IDisposable
    {
        public byte** Pointers { get; }
        private readonly int _count;

        public NativeUtf8Strings(IReadOnlyList<string> values)
        {
            _count = values.Count;
            Pointers = (byte**)NativeMemory.AllocZeroed((nuint)(values.Count + 1), (nuint)sizeof(byte*));
            for (int i = 0; i < values.Count; i++)
            {
                int length = Encoding.UTF8.GetByteCount(values[i]);
                var text = (byte*)NativeMemory.Alloc((nuint)length + 1);
                Encoding.UTF8.GetBytes(values[i], new Span<byte>(text, length));
                text[length] = 0;
                Pointers[i] = text;
            }
        }

        public void Dispose()
        {
            for (int i = 0; i < _count; i++)
            {
                NativeMemory.Free(Pointers[i]);
            }
            NativeMemory.Free(Pointers);
        }
    }
}
