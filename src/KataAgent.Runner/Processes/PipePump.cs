using System.Runtime.InteropServices;
using KataAgent.Runner.Native;

namespace KataAgent.Runner.Processes;

/// <summary>
/// Reads a child's pipes on one dedicated thread with poll(), so that what arrives on several pipes is
/// handled in a single order and a callback can drain the other pipes before reporting an end
/// (the driver's "finished" frame must come after the output that preceded it).
/// Handlers run on the pump thread and may block (that is the back-pressure to the child).
/// </summary>
internal sealed unsafe class PipePump
{
    private const int ReadBufferSize = 64 * 1024;
    // Once the child has exited, pipes kept open by its background descendants are read only while
    // data keeps coming; the pump stops after this quiet period.
    private const int AfterExitQuietMilliseconds = 200;

    private readonly int[] _fds;
    private readonly bool[] _open;
    private readonly Action<int, ReadOnlySpan<byte>> _onData;
    private readonly Task _processExited;
    private readonly byte[] _buffer = new byte[ReadBufferSize];
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <param name="fds">Pipes to read; the pump closes them when it stops.</param>
    /// <param name="onData">Called with the pipe's index in <paramref name="fds"/> and the bytes read.</param>
    /// <param name="processExited">Completes when the writer process has exited.</param>
    public PipePump(string name, IReadOnlyList<int> fds, Action<int, ReadOnlySpan<byte>> onData, Task processExited)
    {
        _fds = [.. fds];
        _open = _fds.Select(fd => fd >= 0).ToArray();
        _onData = onData;
        _processExited = processExited;
        var thread = new Thread(Run) { IsBackground = true, Name = name };
        thread.Start();
    }

    /// <summary>Completes once every pipe reached end of file (or the child is gone and they went quiet).</summary>
    public Task Finished => _finished.Task;

    /// <summary>Reads whatever is available right now on the other pipes. Call only from a handler.</summary>
    public void DrainAvailable(int exceptIndex)
    {
        for (int index = 0; index < _fds.Length; index++)
        {
            if (index == exceptIndex)
            {
                continue;
            }
            while (_open[index] && PollOne(index, 0))
            {
                ReadOnce(index);
            }
        }
    }

    private void Run()
    {
        try
        {
            var pollFds = new Libc.PollFd[_fds.Length];
            while (_open.Any(open => open))
            {
                bool exited = _processExited.IsCompleted;
                int count = 0;
                var indexOfSlot = new int[_fds.Length];
                for (int index = 0; index < _fds.Length; index++)
                {
                    if (_open[index])
                    {
                        pollFds[count] = new Libc.PollFd { Fd = _fds[index], Events = Libc.POLLIN };
                        indexOfSlot[count++] = index;
                    }
                }
                int ready;
                fixed (Libc.PollFd* slots = pollFds)
                {
                    ready = Libc.poll(slots, (nuint)count, exited ? AfterExitQuietMilliseconds : 250);
                }
                if (ready < 0)
                {
                    int error = Marshal.GetLastPInvokeError();
                    if (error == Libc.EINTR)
                    {
                        continue;
                    }
                    Log.Warn($"poll failed: {Libc.ErrorText(error)}");
                    break;
                }
                if (ready == 0)
                {
                    if (exited)
                    {
                        break;
                    }
                    continue;
                }
                for (int slot = 0; slot < count; slot++)
                {
                    if (pollFds[slot].ReturnedEvents != 0 && _open[indexOfSlot[slot]])
                    {
                        ReadOnce(indexOfSlot[slot]);
                    }
                }
            }
        }
        catch (Exception exception)
        {
            Log.Warn($"output pump failed: {exception.Message}");
        }
        finally
        {
            for (int index = 0; index < _fds.Length; index++)
            {
                if (_fds[index] >= 0)
                {
                    _ = Libc.close(_fds[index]);
                }
                _open[index] = false;
            }
            _finished.TrySetResult();
        }
    }

    private bool PollOne(int index, int timeoutMilliseconds)
    {
        var pollFd = new Libc.PollFd { Fd = _fds[index], Events = Libc.POLLIN };
        return Libc.poll(&pollFd, 1, timeoutMilliseconds) > 0;
    }

    private void ReadOnce(int index)
    {
        nint read;
        fixed (byte* buffer = _buffer)
        {
            do
            {
                read = Libc.read(_fds[index], buffer, _buffer.Length);
            }
            while (read < 0 && Marshal.GetLastPInvokeError() == Libc.EINTR);
        }
        if (read <= 0)
        {
            _open[index] = false;
            return;
        }
        _onData(index, _buffer.AsSpan(0, (int)read));
    }
}
