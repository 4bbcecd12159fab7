namespace KataAgent.Core.Cgroups;

/// <summary>
/// Whether this host's memory cgroup accounts swap, so that a memory+swap limit can be set (cgroup v1:
/// memory.memsw.* exists only with swap accounting, CONFIG_MEMCG_SWAP and swapaccount=1; v2: memory.swap.max in
/// non-root cgroups). Runtimes fail a container whose spec sets a swap limit the cgroup cannot take.
/// </summary>
public static class SwapAccounting
{
    private static readonly Lazy<bool> Host = new(() => Check("/sys/fs/cgroup"));

    public static bool OnHost => Host.Value;

    public static bool Check(string cgroupRoot)
    {
        if (File.Exists(Path.Combine(cgroupRoot, "cgroup.controllers")))
        {
            // Unified: the root cgroup has no memory.* files of its own; its children show what the kernel offers.
            return Directory.Exists(cgroupRoot) && Directory.EnumerateDirectories(cgroupRoot)
                .Any(d => File.Exists(Path.Combine(d, "memory.swap.max")));
        }
        return File.Exists(Path.Combine(cgroupRoot, "memory", "memory.memsw.limit_in_bytes"));
    }
}
