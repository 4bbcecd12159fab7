using System.Collections.Concurrent;

namespace KataAgent.BackendAi.Kernels;

/// <summary>
/// Which kernels' ends were already announced (kernel_terminated), shared by the RPC methods and <see cref="KernelEvents"/>
/// so a kernel destroyed by the manager is not announced again when Core reports its destroy.
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
}
