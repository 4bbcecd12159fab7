using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Channels;
using KataAgent.Runner.Execution;
using KataAgent.Runner.Native;
using KataAgent.Runner.Processes;
using KataAgent.Runner.Transport;

namespace KataAgent.Runner.Commands;

/// <summary>
/// One command started by `cmd-start`: its own process group, output sent as `cmd-output` (back-pressured like
/// run output: the pump blocks while the runner's output queue is full), stdin written by its own writer so the
/// receive thread never blocks on a child that does not read, and `cmd-exit` after the last output.
/// </summary>
internal sealed class RunningCommand
{
    /// <summary>Stdin bytes accepted ahead of what the child has read; more is dropped (with a log line).</summary>
    public const int MaxPendingStdinBytes = 1024 * 1024;

    private readonly ChildProcess _process;
    private readonly AgentLink _link;
    private readonly byte[] _outputHeaderStdout;
    private readonly byte[] _outputHeaderStderr;
    private readonly Lock _inputGate = new();
    private readonly Channel<byte[]?> _stdin = Channel.CreateUnbounded<byte[]?>(new UnboundedChannelOptions { SingleReader = true });
    // PTY only: the terminal's controller, for resizing; closed under the input gate once the command is over.
    private int _controllerFd;
    // PTY only: our own replica fd, held until the child has exited so the controller does not read EIO before it opens its own.
    private int _replicaFd;
    private long _pendingStdinBytes;
    private bool _stdinClosed;

    /// <param name="inputFd">The stdin pipe or the terminal's controller (-1: no input); a PTY's is kept for resizing.</param>
    private RunningCommand(string id, ChildProcess process, AgentLink link, int inputFd, int replicaFd, bool isTerminal)
    {
        Id = id;
        _process = process;
        _link = link;
        _controllerFd = isTerminal ? inputFd : -1;
        _replicaFd = replicaFd;
        _stdinClosed = inputFd < 0;
        IsTerminal = isTerminal;
        _outputHeaderStdout = Encoding.ASCII.GetBytes($"{id}\n{(isTerminal ? "pty" : "stdout")}\n");
        _outputHeaderStderr = Encoding.ASCII.GetBytes($"{id}\nstderr\n");
        int[] outputFds = isTerminal ? [Duplicate(inputFd)] : [process.StdoutFd, process.StderrFd];
        var pump = new PipePump($"cmd-{process.Pid}", outputFds, (index, data) => SendOutput(index, data), process.Exited);
        // The writer owns its descriptor (a copy for a terminal), so nothing else can close it under a blocked write.
        int writerFd = inputFd < 0 ? -1 : isTerminal ? Duplicate(inputFd) : inputFd;
        _ = Task.Factory.StartNew(() => WriteStdinAsync(writerFd), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap();
        Completion = FinishAsync(pump);
    }

    public string Id { get; }
    public int Pid => _process.Pid;
    public bool IsTerminal { get; }

    /// <summary>Completes after `cmd-exit` was queued.</summary>
    public Task Completion { get; }

    public static RunningCommand Start(CommandStartRequest request, IReadOnlyDictionary<string, string> environment,
        string workingDirectory, AgentLink link)
    {
        string executable = request.Arguments[0];
        if (!executable.Contains('/', StringComparison.Ordinal))
        {
            // Looked up in the command's PATH (posix_spawnp would use the runner's own).
            executable = Services.HelperCommand.FindExecutable(executable, environment)
                ?? throw new FileNotFoundException($"command not found: {executable} (not in PATH {environment.GetValueOrDefault("PATH", "")})");
        }
        if (request.Terminal is not { } size)
        {
            ChildProcess process = ProcessSpawner.Start(new ProcessStartSpec
            {
                Executable = executable,
                Arguments = request.Arguments,
                Environment = environment,
                WorkingDirectory = workingDirectory,
                RedirectStdin = request.Stdin,
            });
            return new RunningCommand(request.Id, process, link, process.StdinFd, -1, isTerminal: false);
        }
        (int controller, int replica, string replicaPath) = OpenTerminal(size.Columns, size.Rows);
        try
        {
            ChildProcess process = ProcessSpawner.Start(new ProcessStartSpec
            {
                Executable = executable,
                Arguments = request.Arguments,
                Environment = environment,
                WorkingDirectory = workingDirectory,
                TerminalPath = replicaPath,
            });
            return new RunningCommand(request.Id, process, link, controller, replica, isTerminal: true);
        }
        catch
        {
            _ = Libc.close(controller);
            _ = Libc.close(replica);
            throw;
        }
    }

    /// <summary>Queues stdin bytes for the child; false (and dropped) past <see cref="MaxPendingStdinBytes"/> or after EOF.</summary>
    public bool WriteStdin(byte[] data)
    {
        lock (_inputGate)
        {
            if (_stdinClosed || _pendingStdinBytes + data.Length > MaxPendingStdinBytes)
            {
                return false;
            }
            _pendingStdinBytes += data.Length;
        }
        return _stdin.Writer.TryWrite(data);
    }

    /// <summary>End of input: the pipe is closed; on a terminal, the EOF character (^D) is typed instead.</summary>
    public void CloseStdin()
    {
        lock (_inputGate)
        {
            if (_stdinClosed)
            {
                return;
            }
            _stdinClosed = true;
        }
        _ = _stdin.Writer.TryWrite(null);
    }

    public unsafe bool Resize(ushort columns, ushort rows)
    {
        lock (_inputGate)
        {
            if (_controllerFd < 0)
            {
                return false;
            }
            var size = new Libc.WindowSize { Columns = columns, Rows = rows };
            return Libc.ioctl(_controllerFd, Libc.TIOCSWINSZ, &size) == 0;
        }
    }

    public void Signal(int signal) => _process.SignalGroup(signal);

    public Task TerminateAsync(TimeSpan grace) => _process.TerminateAsync(grace);

    private void SendOutput(int index, ReadOnlySpan<byte> data)
    {
        byte[] header = index == 0 ? _outputHeaderStdout : _outputHeaderStderr;
        // Under the runner's message bound with the header included.
        int chunk = AgentLink.MaxRunOutputMessageBytes - header.Length;
        for (int offset = 0; offset < data.Length; offset += chunk)
        {
            ReadOnlySpan<byte> part = data.Slice(offset, Math.Min(chunk, data.Length - offset));
            byte[] payload = new byte[header.Length + part.Length];
            header.CopyTo(payload, 0);
            part.CopyTo(payload.AsSpan(header.Length));
            _link.SendRunOutput(CommandManager.OutputType, payload);
        }
    }

    private async Task WriteStdinAsync(int fd)
    {
        if (fd < 0)
        {
            return;
        }
        try
        {
            ChannelReader<byte[]?> reader = _stdin.Reader;
            while (await reader.WaitToReadAsync().ConfigureAwait(false))
            {
                while (reader.TryRead(out byte[]? data))
                {
                    if (data is null)
                    {
                        if (IsTerminal)
                        {
                            _ = FdWriter.WriteAll(fd, [0x04]);
                        }
                        return;
                    }
                    lock (_inputGate)
                    {
                        _pendingStdinBytes -= data.Length;
                    }
                    if (!FdWriter.WriteAll(fd, data))
                    {
                        // The reader is gone (the child closed its stdin or exited): further input goes nowhere.
                        return;
                    }
                }
            }
        }
        finally
        {
            lock (_inputGate)
            {
                _stdinClosed = true;
            }
            _ = Libc.close(fd);
        }
    }

    private async Task FinishAsync(PipePump pump)
    {
        int status = await _process.Exited.ConfigureAwait(false);
        // The child is gone: let the controller see the hang-up once its descendants close the replica too.
        lock (_inputGate)
        {
            if (_replicaFd >= 0)
            {
                _ = Libc.close(_replicaFd);
                _replicaFd = -1;
            }
        }
        await pump.Finished.ConfigureAwait(false);
        _stdin.Writer.TryComplete();
        lock (_inputGate)
        {
            if (_controllerFd >= 0)
            {
                _ = Libc.close(_controllerFd);
                _controllerFd = -1;
            }
        }
        string exit = status >= 0
            ? $"{{\"id\":\"{Id}\",\"exitCode\":{status},\"signal\":null}}"
            : $"{{\"id\":\"{Id}\",\"exitCode\":null,\"signal\":{-status}}}";
        await Task.Run(() => _link.SendRunOutput(CommandManager.ExitType, exit)).ConfigureAwait(false);
    }

    private static int Duplicate(int fd)
    {
        int copy = Libc.fcntl(fd, Libc.F_DUPFD_CLOEXEC, 10);
        return copy >= 0 ? copy : throw new IOException($"cannot duplicate the terminal: {Libc.ErrorText(Marshal.GetLastPInvokeError())}");
    }

    private static unsafe (int Controller, int Replica, string ReplicaPath) OpenTerminal(ushort columns, ushort rows)
    {
        int controller = Libc.posix_openpt(Libc.O_RDWR | Libc.O_NOCTTY | Libc.O_CLOEXEC);
        if (controller < 0)
        {
            throw new IOException($"cannot open a pseudo-terminal: {Libc.ErrorText(Marshal.GetLastPInvokeError())}");
        }
        try
        {
            if (Libc.grantpt(controller) != 0 || Libc.unlockpt(controller) != 0)
            {
                throw new IOException($"cannot unlock the pseudo-terminal: {Libc.ErrorText(Marshal.GetLastPInvokeError())}");
            }
            byte* name = stackalloc byte[128];
            int error = Libc.ptsname_r(controller, name, 128);
            if (error != 0)
            {
                throw new IOException($"cannot name the pseudo-terminal: {Libc.ErrorText(error)}");
            }
            string replicaPath = Marshal.PtrToStringUTF8((nint)name)!;
            var size = new Libc.WindowSize { Columns = columns, Rows = rows };
            if (Libc.ioctl(controller, Libc.TIOCSWINSZ, &size) != 0)
            {
                throw new IOException($"cannot size the pseudo-terminal: {Libc.ErrorText(Marshal.GetLastPInvokeError())}");
            }
            int replica = OpenReplica(replicaPath);
            return (controller, replica, replicaPath);
        }
        catch
        {
            _ = Libc.close(controller);
            throw;
        }
    }

    private static unsafe int OpenReplica(string path)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* pathPointer = bytes)
        {
            int fd = Libc.open(pathPointer, Libc.O_RDWR | Libc.O_NOCTTY | Libc.O_CLOEXEC);
            return fd >= 0 ? fd : throw new IOException($"cannot open {path}: {Libc.ErrorText(Marshal.GetLastPInvokeError())}");
        }
    }
}
