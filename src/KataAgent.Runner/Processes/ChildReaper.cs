using KataAgent.Runner.Native;

namespace KataAgent.Runner.Processes;

/// <summary>
/// Reaps every child, including orphans re-parented to the runner (it is PID 1 in the container, and
/// a child subreaper elsewhere). One dedicated thread blocks in waitpid(-1); exit statuses of the
/// processes the runner started complete their <see cref="ChildProcess.Exited"/> task.
/// The runner never uses System.Diagnostics.Process, whose own waitpid calls would race with this one.
/// </summary>
// A process-lifetime singleton: its wait handle lives as long as the runner.
#pragma warning disable CA1001
internal sealed unsafe class ChildReaper
#pragma warning restore CA1001
{
    private readonly Dictionary<int, TaskCompletionSource<int>> _exitByPid = [];
    private readonly AutoResetEvent _childStarted = new(false);

    /// <summary>Held while spawning, so a child is registered before the reaper can see it exit.</summary>
    public object SpawnGate { get; } = new();

    public static ChildReaper Instance { get; } = new();

    private ChildReaper()
    {
        var thread = new Thread(ReapForever) { IsBackground = true, Name = "child-reaper" };
        thread.Start();
    }

    /// <summary>Call with <see cref="SpawnGate"/> held, right after the child was spawned.</summary>
    public Task<int> Register(int pid)
    {
        var exit = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        _exitByPid[pid] = exit;
        _childStarted.Set();
        return exit.Task;
    }

    public IReadOnlyList<int> LivePids()
    {
        lock (SpawnGate)
        {
            return [.. _exitByPid.Keys];
        }
    }

    private void ReapForever()
    {
        while (true)
        {
            int status;
            int pid = Libc.waitpid(-1, &status, 0);
            if (pid > 0)
            {
                TaskCompletionSource<int>? exit;
                lock (SpawnGate)
                {
                    _exitByPid.Remove(pid, out exit);
                }
                exit?.TrySetResult(Libc.DecodeWaitStatus(status));
                continue;
            }
            int error = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (error == Libc.ECHILD)
            {
                // No children at all: sleep until one is started (the event remembers a start that raced).
                _childStarted.WaitOne();
            }
            else if (error != Libc.EINTR)
            {
                Log.Warn($"waitpid failed: {Libc.ErrorText(error)}");
                Thread.Sleep(100);
            }
        }
    }
}
