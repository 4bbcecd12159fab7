using System.Collections.Concurrent;

namespace KataAgent.BackendAi.Kernels;

/// <summary>
/// Which kernels' ends were already announced (kernel_terminated), shared by the RPC methods and <see cref="KernelEvents"/>
/// so a kernel destroyed by the manager is not announced again when Core reports its destroy; and which kernels are
/// being restarted, whose old task's exit is no end.
/// </summary>
public sealed class KernelTerminations
{
    private readonly ConcurrentDictionary<string, DateTimeOffset> _claimed = new();
    private static readonly TimeSpan Retention = TimeSpan.FromHours(1);

    /// <summary>True for the first caller only: that one announces the end.</summary>
    public bool TryClaim(string kernelId)
    {
        var now = DateTimeOffset.UtcNow;
        foreach (var (id, at) in _claimed)
        {
            if (now - at > Retention)
                _claimed.TryRemove(id, out _);
        }
        return _claimed.TryAdd(kernelId, now);
    }

    /// <summary>A kernel id reused by a new kernel (create after destroy) may end again.</summary>
    public void Forget(string kernelId) => _claimed.TryRemove(kernelId, out _);

    private readonly ConcurrentDictionary<string, byte> _restarting = new();

    /// <summary>
    /// restart_kernel replaces the kernel's container: the old task's exit is part of the restart, not the kernel's end.
    /// Dispose the returned scope when the restart is over (done or failed).
    /// </summary>
    public IDisposable BeginRestart(string kernelId)
    {
        if (!_restarting.TryAdd(kernelId, 0))
            throw new InvalidOperationException($"kernel {kernelId} is already restarting");
        return new RestartScope(this, kernelId);
    }

    public bool IsRestarting(string kernelId) => _restarting.ContainsKey(kernelId);

    private sealed class RestartScope(KernelTerminations owner, string kernelId) : IDisposable
    {
        public void Dispose() => owner._restarting.TryRemove(kernelId, out _);
    }
}
