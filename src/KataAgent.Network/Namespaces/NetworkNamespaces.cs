using KataAgent.Network.Native;

namespace KataAgent.Network;

/// <summary>
/// Named, persistent network namespaces kept the way <c>ip netns add</c> keeps them: a file in the run
/// directory (default /var/run/netns) with the namespace bind-mounted onto it, so it outlives any process.
/// Namespace switches happen on a dedicated thread created per call: setns and unshare act on the calling
/// thread only, and a thread-pool thread left in another namespace would poison unrelated work.
/// </summary>
public sealed class NetworkNamespaces
{
    public const string DefaultRunDirectory = "/var/run/netns";

    private static readonly SemaphoreSlim SharedMountLock = new(1, 1);
    private static readonly HashSet<string> SharedDirectories = new(StringComparer.Ordinal);

    public NetworkNamespaces(string runDirectory = DefaultRunDirectory)
    {
        if (string.IsNullOrWhiteSpace(runDirectory) || !Path.IsPathRooted(runDirectory))
            throw new ArgumentException($"netns run directory must be an absolute path, got '{runDirectory}'", nameof(runDirectory));
        RunDirectory = Path.TrimEndingDirectorySeparator(runDirectory);
    }

    public string RunDirectory { get; }

    public string PathOf(string name)
    {
        ValidateName(name);
        return Path.Combine(RunDirectory, name);
    }

    public bool Exists(string name) => File.Exists(PathOf(name));

    /// <summary>Names of the namespaces in the run directory (every entry; callers filter by their prefix).</summary>
    public IReadOnlyList<string> List()
    {
        if (!Directory.Exists(RunDirectory))
            return [];
        return Directory.EnumerateFiles(RunDirectory).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>Creates the namespace (with its loopback up) and returns its path. Fails if the name is taken.</summary>
    public async Task<string> CreateAsync(string name, CancellationToken cancellationToken = default)
    {
        string path = PathOf(name);
        await EnsureRunDirectoryAsync(cancellationToken).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        await DedicatedThread.RunAsync(() => CreateOnThisThread(name, path), $"netns-add {name}").ConfigureAwait(false);
        return path;
    }

    /// <summary>Unmounts and removes the namespace file. Returns false if there was nothing to remove.</summary>
    public bool Delete(string name)
    {
        string path = PathOf(name);
        bool existed = File.Exists(path);
        // MNT_DETACH: processes still inside keep the namespace alive; the name goes away now.
        if (Libc.umount2(path, Libc.MNT_DETACH) != 0)
        {
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            // EINVAL: not a mount point (half-created); ENOENT: already gone. Both are fine for a delete.
            if (errno != Libc.EINVAL && errno != Libc.ENOENT)
                throw Libc.Error($"umount netns '{path}'", errno);
        }
        File.Delete(path);
        return existed;
    }

    /// <summary>
    /// Runs <paramref name="action"/> on a dedicated thread that has entered the namespace. The action must be
    /// synchronous: anything it awaits would continue on another thread, outside the namespace. Sockets it
    /// creates stay in the namespace after it returns, which makes this the way to open a listener inside.
    /// </summary>
    public Task<T> RunInsideAsync<T>(string name, Func<T> action, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(action);
        string path = PathOf(name);
        cancellationToken.ThrowIfCancellationRequested();
        return DedicatedThread.RunAsync(() => RunInsideOnThisThread(path, action), $"netns-exec {name}");
    }

    /// <summary>Counters of every interface in the namespace, read from /proc/thread-self/net/dev inside it.</summary>
    public Task<IReadOnlyDictionary<string, InterfaceStatistics>> GetInterfaceStatisticsAsync(string name, CancellationToken cancellationToken = default) =>
        // /sys/class/net shows the namespace sysfs was mounted in, not the thread's; /proc/thread-self/net follows the thread.
        RunInsideAsync(name, () => InterfaceStatistics.ParseProcNetDev(File.ReadAllText("/proc/thread-self/net/dev")), cancellationToken);

    public async Task<InterfaceStatistics> GetInterfaceStatisticsAsync(string name, string interfaceName, CancellationToken cancellationToken = default)
    {
        var all = await GetInterfaceStatisticsAsync(name, cancellationToken).ConfigureAwait(false);
        return all.TryGetValue(interfaceName, out var stats)
            ? stats
            : throw new NetworkNamespaceException($"interface '{interfaceName}' not found in netns '{name}' (has: {string.Join(", ", all.Keys)})");
    }

    internal static void ValidateName(string name)
    {
        if (string.IsNullOrEmpty(name) || name == "." || name == ".." || name.Contains('/') || name.Contains('\0')
            || System.Text.Encoding.UTF8.GetByteCount(name) > 255)
        {
            throw new ArgumentException($"invalid netns name '{name}'", nameof(name));
        }
    }

    private static void CreateOnThisThread(string name, string path)
    {
        int fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CREAT | Libc.O_EXCL | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            throw errno == Libc.EEXIST
                ? new NetworkNamespaceException($"netns '{name}' already exists ({path})", errno)
                : Libc.Error($"create netns mount point '{path}'", errno);
        }
        Libc.close(fd);

        bool mounted = false;
        try
        {
            int original = OpenOwnNamespace();
            try
            {
                if (Libc.unshare(Libc.CLONE_NEWNET) != 0)
                    throw Libc.Error($"unshare(CLONE_NEWNET) for netns '{name}'");
                try
                {
                    // A fresh namespace has lo down; runtimes (runc, gVisor) expect localhost to work.
                    BringLoopbackUp(name);
                    if (Libc.mount("/proc/thread-self/ns/net", path, "none", Libc.MS_BIND, 0) != 0)
                        throw Libc.Error($"bind-mount netns onto '{path}'");
                    mounted = true;
                }
                finally
                {
                    // Best effort: this thread ends right after, so a failed return cannot leak into other work.
                    Libc.setns(original, Libc.CLONE_NEWNET);
                }
            }
            finally
            {
                Libc.close(original);
            }
        }
        catch
        {
            if (mounted)
                Libc.umount2(path, Libc.MNT_DETACH);
            File.Delete(path);
            throw;
        }
    }

    private static T RunInsideOnThisThread<T>(string path, Func<T> action)
    {
        int target = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (target < 0)
        {
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            throw errno == Libc.ENOENT
                ? new NetworkNamespaceException($"netns '{path}' does not exist", errno)
                : Libc.Error($"open netns '{path}'", errno);
        }
        try
        {
            int original = OpenOwnNamespace();
            try
            {
                if (Libc.setns(target, Libc.CLONE_NEWNET) != 0)
                    throw Libc.Error($"setns into '{path}' (not a mounted network namespace?)");
                try
                {
                    return action();
                }
                finally
                {
                    Libc.setns(original, Libc.CLONE_NEWNET);
                }
            }
            finally
            {
                Libc.close(original);
            }
        }
        finally
        {
            Libc.close(target);
        }
    }

    private static int OpenOwnNamespace()
    {
        int fd = Libc.open("/proc/thread-self/ns/net", Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        return fd >= 0 ? fd : throw Libc.Error("open /proc/thread-self/ns/net");
    }

    private static unsafe void BringLoopbackUp(string name)
    {
        int sock = Libc.socket(Libc.AF_INET, Libc.SOCK_DGRAM | Libc.SOCK_CLOEXEC, 0);
        if (sock < 0)
            throw Libc.Error($"socket for lo in netns '{name}'");
        try
        {
            Libc.IfReq request = default;
            request.Name[0] = (byte)'l';
            request.Name[1] = (byte)'o';
            if (Libc.ioctl(sock, Libc.SIOCGIFFLAGS, &request) != 0)
                throw Libc.Error($"SIOCGIFFLAGS lo in netns '{name}'");
            request.Flags |= Libc.IFF_UP;
            if (Libc.ioctl(sock, Libc.SIOCSIFFLAGS, &request) != 0)
                throw Libc.Error($"SIOCSIFFLAGS lo up in netns '{name}'");
        }
        finally
        {
            Libc.close(sock);
        }
    }

    /// <summary>
    /// Creates the run directory and makes it a shared mount point, as ip-netns does, so namespace mounts made
    /// later propagate into mount namespaces cloned from this one (a shim started in its own mount namespace).
    /// </summary>
    private async Task EnsureRunDirectoryAsync(CancellationToken cancellationToken)
    {
        await SharedMountLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (SharedDirectories.Contains(RunDirectory))
                return;
            Directory.CreateDirectory(RunDirectory);
            if (Libc.mount("", RunDirectory, "none", Libc.MS_SHARED | Libc.MS_REC, 0) != 0)
            {
                int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                if (errno != Libc.EINVAL)
                    throw Libc.Error($"make '{RunDirectory}' a shared mount", errno);
                // EINVAL: not a mount point yet; bind it onto itself, then mark it shared.
                if (Libc.mount(RunDirectory, RunDirectory, "none", Libc.MS_BIND | Libc.MS_REC, 0) != 0)
                    throw Libc.Error($"bind-mount '{RunDirectory}' onto itself");
                if (Libc.mount("", RunDirectory, "none", Libc.MS_SHARED | Libc.MS_REC, 0) != 0)
                    throw Libc.Error($"make '{RunDirectory}' a shared mount");
            }
            SharedDirectories.Add(RunDirectory);
        }
        finally
        {
            SharedMountLock.Release();
        }
    }
}
