using System.Globalization;
using KataAgent.Core.Diagnostics;
using KataAgent.Core.Events;
using KataAgent.Core.Sessions;

namespace KataAgent.Core;

/// <summary>
/// sandbox-died for gVisor's sandbox killed from the host (docs/END-REASONS.md): the runsc-sandbox process is the task's
/// init as the shim sees it and ends at every exit, with 128+N when its container was killed by signal N, which the shim
/// reports exactly like the sandbox killed by signal N. How the process itself ended (a signal, or exit(2)) tells
/// them apart: <see cref="ProcessExitWatcher"/> sees that for any process.
/// </summary>
public sealed partial class Agent
{
    /// <summary>How long the task's exit waits for the process event of its sandbox (it normally comes well before).</summary>
    private static readonly TimeSpan SandboxExitEventGrace = TimeSpan.FromMilliseconds(200);

    private void WatchSandboxProcesses(Session session)
    {
        foreach (var p in session.SandboxProcesses.Where(p => p.Role == SandboxProcess.RunscSandboxRole))
            _exitWatcher.Watch(p.Pid);
    }

    private void ForgetSandboxProcesses(Session session)
    {
        foreach (var p in session.SandboxProcesses.Where(p => p.Role == SandboxProcess.RunscSandboxRole))
            _exitWatcher.Forget(p.Pid);
    }

    /// <summary>
    /// sandbox-died when the shim is gone, or gVisor's sandbox died of a signal itself (unless the cgroup saw an OOM: the
    /// OOM killer's SIGKILL of the sandbox is oom-killed); null: the task's own end.
    /// </summary>
    private async Task<SessionEndReason?> SandboxDeathAsync(Session session, TaskExited exited, CancellationToken cancellationToken)
    {
        if (DeadSandbox(session) is { } shimGone)
            return SessionEndReason.SandboxDied(shimGone, exited.ExitCode, exited.At);
        var sandboxes = session.SandboxProcesses.Where(p => p.Role == SandboxProcess.RunscSandboxRole).ToList();
        // The process event is read on another thread: give it a moment when the sandbox is gone but its end not seen yet.
        var deadline = DateTimeOffset.UtcNow + SandboxExitEventGrace;
        while (_exitWatcher.IsAvailable && DateTimeOffset.UtcNow < deadline &&
               sandboxes.Any(p => _exitWatcher.ExitStatusOf(p.Pid) is null && !p.IsAlive()))
        {
            await Task.Delay(TimeSpan.FromMilliseconds(10), cancellationToken).ConfigureAwait(false);
        }
        foreach (var sandbox in sandboxes)
        {
            if (_exitWatcher.ExitStatusOf(sandbox.Pid) is int status && ProcessExitWatcher.KillingSignal(status) is int signal &&
                !(signal == 9 && session.OutOfMemory))
            {
                var what = string.Create(CultureInfo.InvariantCulture, $"{sandbox.Role} pid {sandbox.Pid} killed by signal {signal}");
                return SessionEndReason.SandboxDied(what, exited.ExitCode, exited.At) with { Signal = signal };
            }
        }
        return null;
    }
}
