using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Logs;

/// <summary>
/// Carries one session's container stdout/stderr from a FIFO the shim writes (<c>DATA_DIR/logs/&lt;id&gt;.fifo</c>) into its
/// log file, keeping the file at most <c>maxBytes</c> on every write: when a chunk would pass the cap, the file is cut to
/// its newest part first. The shim can no longer grow the file itself (it used to append to it directly, and the cap
/// was applied only at reconcile ticks). A relay reads on a dedicated thread blocked in poll(2) on the FIFO and an
/// eventfd that stopping signals; while no relay reads (the agent is down), the shim's writes block once the pipe
/// buffers are full, so a session cannot outgrow its log then either.
/// </summary>
internal sealed partial class LogRelay : IDisposable
{
    public const int ChunkBytes = 64 * 1024;
    private static readonly byte[] CutMarker = Encoding.UTF8.GetBytes("[kata-agent: log cut to its newest part]\n");

    private readonly int _fifo;
    private readonly int _wake;
    private readonly FileStream _log;
    private readonly long _maxBytes;
    private readonly Thread _thread;
    private readonly ILogger _logger;
    private int _stopped;

    private LogRelay(int fifo, int wake, FileStream log, long maxBytes, string kernelId, ILogger logger)
    {
        _fifo = fifo;
        _wake = wake;
        _log = log;
        _maxBytes = maxBytes;
        _logger = logger;
        _thread = new Thread(Run) { IsBackground = true, Name = "log-relay " + kernelId };
    }

    public Exception? Failure { get; private set; }

    /// <summary>Makes the FIFO if needed (0600), opens it and the log, and starts carrying.</summary>
    public static LogRelay Start(string fifoPath, string logPath, long maxBytes, string kernelId, ILogger logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBytes, 2L * ChunkBytes);
        if (Mkfifo(fifoPath, 0x180) != 0 && Marshal.GetLastPInvokeError() != EEXIST)
            throw new IOException($"mkfifo {fifoPath}: errno {Marshal.GetLastPInvokeError()}");
        // O_RDWR: the open never waits for a writer, and the FIFO never reads as closed between shim writers.
        var fifo = Open(fifoPath, O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
        if (fifo < 0)
            throw new IOException($"open {fifoPath}: errno {Marshal.GetLastPInvokeError()}");
        var wake = EventFd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wake < 0)
        {
            var err = Marshal.GetLastPInvokeError();
            Close(fifo);
            throw new IOException($"eventfd: errno {err}");
        }
        FileStream log;
        try
        {
            log = new FileStream(logPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        }
        catch
        {
            Close(fifo);
            Close(wake);
            throw;
        }
        var relay = new LogRelay(fifo, wake, log, maxBytes, kernelId, logger);
        relay._thread.Start();
        return relay;
    }

    private void Run()
    {
        var buffer = new byte[ChunkBytes];
        var fds = new PollFd[] { new() { Fd = _fifo, Events = POLLIN }, new() { Fd = _wake, Events = POLLIN } };
        try
        {
            while (true)
            {
                fds[0].Revents = 0;
                fds[1].Revents = 0;
                if (Poll(fds, 2, -1) < 0)
                {
                    if (Marshal.GetLastPInvokeError() == EINTR)
                        continue;
                    throw new IOException($"poll: errno {Marshal.GetLastPInvokeError()}");
                }
                if (fds[0].Revents != 0)
                    Drain(buffer);
                if (fds[1].Revents != 0)
                {
                    Drain(buffer); // what the shim wrote before the stop
                    return;
                }
            }
        }
        catch (Exception e)
        {
            // Never the agent's end: the session's log stops, the reason is kept and logged.
            Failure = e;
            _logger.LogError(e, "log relay {Thread} stopped", Thread.CurrentThread.Name);
        }
    }

    // At most 16 chunks per wake-up: a writer that never pauses must not keep the relay from seeing a stop.
    private void Drain(byte[] buffer)
    {
        for (var chunks = 0; chunks < 16; chunks++)
        {
            var n = (int)Read(_fifo, buffer, buffer.Length);
            if (n > 0)
            {
                Append(buffer.AsSpan(0, n));
                continue;
            }
            var err = Marshal.GetLastPInvokeError();
            if (n == 0 || err == EAGAIN)
                return;
            if (err != EINTR)
                throw new IOException($"read log fifo: errno {err}");
        }
    }

    /// <summary>Appends a chunk; the file stays at most the cap, keeping its newest half when it must be cut.</summary>
    internal void Append(ReadOnlySpan<byte> chunk)
    {
        var length = _log.Length; // someone else may have cut it (a reader's cap check): never write past the end
        if (length + chunk.Length > _maxBytes)
        {
            var keep = (int)Math.Max(0, Math.Min(length, _maxBytes / 2 - CutMarker.Length - chunk.Length));
            var tail = new byte[keep];
            _log.Seek(length - keep, SeekOrigin.Begin);
            _log.ReadExactly(tail);
            _log.SetLength(0);
            _log.Seek(0, SeekOrigin.Begin);
            _log.Write(CutMarker);
            _log.Write(tail);
        }
        else
        {
            _log.Seek(length, SeekOrigin.Begin);
        }
        _log.Write(chunk);
        _log.Flush();
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0)
            return;
        var one = BitConverter.GetBytes(1UL);
        _ = Write(_wake, one, one.Length);
        _thread.Join(); // it drains at most 16 chunks more before ending
        Close(_fifo);
        Close(_wake);
        _log.Dispose();
    }

    private const int O_RDWR = 0x2;
    private const int O_NONBLOCK = 0x800;
    private const int O_CLOEXEC = 0x80000;
    private const int EFD_CLOEXEC = 0x80000;
    private const int EFD_NONBLOCK = 0x800;
    private const short POLLIN = 0x1;
    private const int EEXIST = 17;
    private const int EINTR = 4;
    private const int EAGAIN = 11;

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", EntryPoint = "mkfifo", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Mkfifo(string path, uint mode);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags, uint mode);

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFd(uint initval, int flags);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll([In, Out] PollFd[] fds, ulong nfds, int timeout);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(int fd, [Out] byte[] buffer, nint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint Write(int fd, byte[] buffer, nint count);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
