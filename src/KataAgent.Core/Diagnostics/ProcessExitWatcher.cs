using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Diagnostics;

/// <summary>
/// How watched host processes ended, from the kernel's process events connector (netlink, CN_IDX_PROC): the raw wait
/// status of any process, which a non-parent cannot get otherwise. It tells gVisor's sandbox killed by a signal from
/// the host apart from the sandbox exiting after its container did (runsc exits with 128+N for a container killed by
/// signal N, which containerd reports exactly like a SIGKILLed sandbox). Needs root; unavailable leaves it inert.
/// </summary>
public sealed partial class ProcessExitWatcher : IDisposable
{
    private const int AfNetlink = 16;
    private const int SockDgram = 2;
    private const int SockCloexec = 0x80000;
    private const int NetlinkConnector = 11;
    private const uint CnIdxProc = 1;
    private const uint CnValProc = 1;
    private const uint ProcCnMcastListen = 1;
    private const uint ProcEventExit = 0x80000000;
    private const ushort NlmsgDone = 3;
    private const int SolSocket = 1;
    private const int SoRcvbufforce = 33;
    private const int SoRcvtimeo = 20;
    private const int NlmsgHeaderSize = 16;
    private const int CnMsgSize = 20;
    private const int ProcEventHeaderSize = 16;

    private readonly ConcurrentDictionary<int, byte> _watched = new();
    private readonly ConcurrentDictionary<int, int> _exits = new();
    private readonly ILogger _logger;
    private readonly Thread? _thread;
    private volatile bool _stopping;
    private readonly int _fd = -1;

    public ProcessExitWatcher(ILogger logger)
    {
        _logger = logger;
        _fd = Open(out var error);
        if (_fd < 0)
        {
            logger.LogWarning("process exit events unavailable ({Error}): a gVisor sandbox killed from the host reads as signaled, not sandbox-died", error);
            return;
        }
        _thread = new Thread(ReadLoop) { IsBackground = true, Name = "process-exit-watcher" };
        _thread.Start();
    }

    public bool IsAvailable => _fd >= 0;

    public void Watch(int pid) => _watched[pid] = 0;

    public void Forget(int pid)
    {
        _watched.TryRemove(pid, out _);
        _exits.TryRemove(pid, out _);
    }

    /// <summary>The wait status a watched process ended with (as waitpid(2) reports it), once it has.</summary>
    public int? ExitStatusOf(int pid) => _exits.TryGetValue(pid, out var status) ? status : null;

    /// <summary>The signal that killed it, when a signal did (not an exit(2), whatever its code).</summary>
    public static int? KillingSignal(int waitStatus) => (waitStatus & 0x7f) is var signal and not 0 and not 0x7f ? signal : null;

    private static int Open(out string error)
    {
        var fd = socket(AfNetlink, SockDgram | SockCloexec, NetlinkConnector);
        if (fd < 0)
        {
            error = $"socket: errno {Marshal.GetLastPInvokeError()}";
            return -1;
        }
        Span<byte> address = stackalloc byte[12];
        address.Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(address, AfNetlink);
        BinaryPrimitives.WriteUInt32LittleEndian(address[8..], CnIdxProc);
        // Many processes end on a busy host: a large buffer keeps bursts from being dropped; a timeout lets Dispose stop the reader.
        int bufferSize = 4 << 20;
        _ = setsockopt(fd, SolSocket, SoRcvbufforce, ref bufferSize, sizeof(int));
        Span<long> timeout = [0, 500_000];
        if (bind(fd, address, address.Length) != 0 || setsockopt(fd, SolSocket, SoRcvtimeo, MemoryMarshal.AsBytes(timeout), 16) != 0)
        {
            error = $"bind: errno {Marshal.GetLastPInvokeError()}";
            _ = close(fd);
            return -1;
        }
        Span<byte> listen = stackalloc byte[NlmsgHeaderSize + CnMsgSize + 4];
        listen.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(listen, (uint)listen.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(listen[4..], NlmsgDone);
        BinaryPrimitives.WriteUInt32LittleEndian(listen[12..], (uint)Environment.ProcessId);
        BinaryPrimitives.WriteUInt32LittleEndian(listen[16..], CnIdxProc);
        BinaryPrimitives.WriteUInt32LittleEndian(listen[20..], CnValProc);
        BinaryPrimitives.WriteUInt16LittleEndian(listen[32..], 4);
        BinaryPrimitives.WriteUInt32LittleEndian(listen[36..], ProcCnMcastListen);
        if (send(fd, listen, listen.Length, 0) != listen.Length)
        {
            error = $"send: errno {Marshal.GetLastPInvokeError()}";
            _ = close(fd);
            return -1;
        }
        error = "";
        return fd;
    }

    private void ReadLoop()
    {
        var buffer = new byte[16384];
        while (!_stopping)
        {
            var read = recv(_fd, buffer, buffer.Length, 0);
            if (read <= 0)
                continue; // timeout (to check _stopping), ENOBUFS after a burst, EINTR
            if (_watched.IsEmpty)
                continue;
            Parse(buffer.AsSpan(0, (int)read));
        }
    }

    private void Parse(ReadOnlySpan<byte> data)
    {
        while (data.Length >= NlmsgHeaderSize)
        {
            var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(data);
            if (length < NlmsgHeaderSize || length > data.Length)
                return;
            var message = data[NlmsgHeaderSize..length];
            const int eventAt = CnMsgSize;
            const int dataAt = eventAt + ProcEventHeaderSize;
            if (message.Length >= dataAt + 16 && BinaryPrimitives.ReadUInt32LittleEndian(message[eventAt..]) == ProcEventExit)
            {
                var pid = (int)BinaryPrimitives.ReadUInt32LittleEndian(message[dataAt..]);
                var tgid = (int)BinaryPrimitives.ReadUInt32LittleEndian(message[(dataAt + 4)..]);
                var status = (int)BinaryPrimitives.ReadUInt32LittleEndian(message[(dataAt + 8)..]);
                // A thread's end is not the process's: only the thread-group leader's counts.
                if (pid == tgid && _watched.ContainsKey(pid))
                {
                    _exits[pid] = status;
                    _logger.LogDebug("watched process {Pid} ended (wait status 0x{Status:x})", pid, status);
                }
            }
            data = data[Math.Min(data.Length, (length + 3) & ~3)..];
        }
    }

    public void Dispose()
    {
        if (_fd < 0)
            return;
        _stopping = true;
        _thread?.Join();
        _ = close(_fd);
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int bind(int fd, ReadOnlySpan<byte> address, int length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setsockopt(int fd, int level, int name, ref int value, int length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setsockopt(int fd, int level, int name, ReadOnlySpan<byte> value, int length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint send(int fd, ReadOnlySpan<byte> data, nint length, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint recv(int fd, Span<byte> data, nint length, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}
