using System.Runtime.InteropServices;
using KataAgent.Core.Scratch;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Mounts;

/// <summary>A host path a session asked for, and how.</summary>
public sealed record MountSource(string HostPath, bool ReadOnly);

/// <summary>
/// Pins each requested host path to its inode and bind-mounts that inode (through /proc/self/fd/N)
/// into an agent-owned staging directory, ROOT/&lt;kernel-id&gt;/&lt;n&gt;. The container spec names the staging
/// path, so the runtime mounts what was checked, never what the path names by then. ROOT is a private,
/// unbindable mount of its own, so nothing staged there propagates to other mount namespaces.
/// </summary>
public sealed class MountStaging(string root, ILogger logger, bool useMountSetattr = true)
{
    private static readonly Lock RootSetup = new();
    private const int AtFdCwd = -100;
    private const uint OwnerOnlyDirectory = 0x1C0; // 0700
    private const uint OwnerOnlyFile = 0x180; // 0600

    public string Root { get; } = root.TrimEnd('/');

    public string SessionDirectory(string kernelId) => Path.Combine(Root, CheckedId(kernelId));

    /// <summary>The staging path of the session's <paramref name="index"/>-th mount (the order of the request).</summary>
    public string StagingPath(string kernelId, int index) => Path.Combine(SessionDirectory(kernelId), index.ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>
    /// Opens every source under an allowed root (refusing symlinks and '..'), then stages each. Returns
    /// the staging paths in request order. On failure nothing of this call is left behind.
    /// </summary>
    public IReadOnlyList<string> Pin(string kernelId, IReadOnlyList<MountSource> sources, IReadOnlyList<string> allowedRoots)
    {
        // Every source is checked before anything is mounted: a refusal costs nothing to undo.
        using var opened = PinnedMountSources.Open(sources, allowedRoots);
        return Stage(kernelId, opened);
    }

    /// <summary>
    /// Stages sources opened earlier (<see cref="PinnedMountSources.Open"/>): bind-mounts the very inodes their
    /// descriptors hold, whatever their paths name by now. Returns the staging paths in request order. On failure
    /// nothing of this call is left behind. The caller still owns (and disposes) <paramref name="sources"/>.
    /// </summary>
    public IReadOnlyList<string> Stage(string kernelId, PinnedMountSources sources)
    {
        ArgumentNullException.ThrowIfNull(sources);
        if (sources.Count == 0)
            return [];
        var sessionDir = SessionDirectory(kernelId);
        EnsureRoot();
        // Never adopt a directory some other create left: its mounts are not ours to release on failure.
        if (Scratch.Native.MkdirAt(AtFdCwd, sessionDir, OwnerOnlyDirectory) != 0)
            throw new IOException($"cannot create staging directory {sessionDir}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())} (is another session using kernel id '{kernelId}'?)");
        try
        {
            var staged = new List<string>();
            for (var i = 0; i < sources.Count; i++)
                staged.Add(Stage(sources[i].Source, StagingPath(kernelId, i), sources[i].ReadOnly));
            return staged;
        }
        catch
        {
            Release(kernelId);
            throw;
        }
    }

    /// <summary>
    /// The staging paths of an existing session (for a restart), each checked to still be a mount
    /// point: a staging dir without its mount would hand the runtime an empty directory.
    /// </summary>
    public IReadOnlyList<string> Existing(string kernelId, int count)
    {
        var mounted = MountTable.Read().Select(m => m.MountPoint).ToHashSet(StringComparer.Ordinal);
        var paths = Enumerable.Range(0, count).Select(i => StagingPath(kernelId, i)).ToList();
        foreach (var path in paths.Where(p => !mounted.Contains(p)))
            throw new InvalidOperationException($"session {kernelId} has lost its staged mount {path} (was the host rebooted or the mount removed?): destroy and recreate it");
        return paths;
    }

    /// <summary>
    /// Unmounts everything staged for the session and removes its staging entries. Idempotent. It only
    /// ever removes empty directories and empty files, so a mount that would not go never costs the data under it.
    /// </summary>
    public void Release(string kernelId)
    {
        var sessionDir = SessionDirectory(kernelId);
        if (!Directory.Exists(sessionDir))
            return;
        for (var round = 0; round < 16; round++)
        {
            var mounts = MountTable.Below(sessionDir);
            if (mounts.Count == 0)
                break;
            foreach (var mount in mounts)
            {
                // Detach: a process that still has a file open there does not keep the session from going.
                if (MountNative.Umount2(mount.MountPoint, MountNative.MNT_DETACH | MountNative.UMOUNT_NOFOLLOW) != 0 &&
                    Marshal.GetLastPInvokeError() != MountNative.EINVAL)
                {
                    throw MountNative.Error($"unmount staged {mount.MountPoint}");
                }
            }
        }
        var left = MountTable.Below(sessionDir);
        if (left.Count > 0)
            throw new IOException($"staged mounts of session {kernelId} would not go: {string.Join(", ", left.Select(m => m.MountPoint))}");
        foreach (var entry in Directory.EnumerateFileSystemEntries(sessionDir))
        {
            if (Directory.Exists(entry) && !File.GetAttributes(entry).HasFlag(FileAttributes.ReparsePoint))
                Directory.Delete(entry, recursive: false);
            else
                File.Delete(entry);
        }
        Directory.Delete(sessionDir, recursive: false);
        logger.LogDebug("released staged mounts of {KernelId}", kernelId);
    }

    /// <summary>Kernel ids that have a staging directory.</summary>
    public IReadOnlyList<string> Sessions() =>
        Directory.Exists(Root) ? Directory.GetDirectories(Root).Select(Path.GetFileName).OfType<string>().ToList() : [];

    /// <summary>Everything staged, for the leak census: session directories and mounts below the root.</summary>
    public IReadOnlyList<string> Leftovers() =>
        [.. Sessions().Select(s => "dir:" + s), .. MountTable.Below(Root).Select(m => "mount:" + m.MountPoint)];

    private string Stage(PinnedMountSource source, string target, bool readOnly)
    {
        // The target is created by the agent in its own 0700 directory: nothing else can put a link there.
        if (source.Kind == MountSourceKind.Directory)
        {
            if (Scratch.Native.MkdirAt(AtFdCwd, target, OwnerOnlyDirectory) != 0)
                throw MountNative.Error($"create staging directory {target}");
        }
        else
        {
            var fd = Scratch.Native.OpenAt(AtFdCwd, target, Scratch.Native.O_WRONLY | Scratch.Native.O_CREAT | Scratch.Native.O_EXCL | Scratch.Native.O_NOFOLLOW | Scratch.Native.O_CLOEXEC,
                OwnerOnlyFile);
            if (fd < 0)
                throw MountNative.Error($"create staging file {target}");
            Scratch.Native.Close(fd);
        }
        // The kernel follows the descriptor's magic link to the very file that was checked, whatever its path names now.
        if (MountNative.Mount(source.ProcPath, target, null, MountNative.MS_BIND | MountNative.MS_REC, 0) != 0)
            throw new MountSourceException(source.Path.Original, $"could not be bind-mounted into {target}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        SetAttributes(target, readOnly);
        // Belt and braces: the staged mount is the pinned inode.
        if (Scratch.Native.StatxAt(AtFdCwd, target, Scratch.Native.AT_SYMLINK_NOFOLLOW, Scratch.Native.STATX_BASIC_STATS, out var st) != 0 || !st.SameInode(source.Stat))
            throw new IOException($"staged mount {target} is not the inode that was checked for '{source.Path.Original}'");
        return target;
    }

    /// <summary>Private (no propagation either way) and, for read-only mounts, read-only on every submount too.</summary>
    private void SetAttributes(string target, bool readOnly)
    {
        if (useMountSetattr)
        {
            var attr = new MountNative.MountAttr { AttrSet = readOnly ? MountNative.MOUNT_ATTR_RDONLY : 0, Propagation = MountNative.MS_PRIVATE };
            if (MountNative.MountSetattr(target, MountNative.AT_RECURSIVE | MountNative.AT_SYMLINK_NOFOLLOW, attr) == 0)
                return;
            var errno = Marshal.GetLastPInvokeError();
            if (errno is not (MountNative.ENOSYS or MountNative.EPERM))
                throw Scratch.Errno.Exception(errno, $"mount_setattr {target}");
            // A kernel before 5.12 or a seccomp filter that does not know the call: remount one by one.
        }
        if (MountNative.Mount(null, target, null, MountNative.MS_PRIVATE | MountNative.MS_REC, 0) != 0)
            throw MountNative.Error($"make {target} private");
        if (!readOnly)
            return;
        // Remounting replaces the per-mount flags: keep nosuid/nodev/noexec/atime as they were.
        foreach (var mount in MountTable.Below(target, includeSelf: true).Reverse())
        {
            var flags = MountNative.MS_REMOUNT | MountNative.MS_BIND | MountNative.MS_RDONLY | KeptFlags(mount.Options);
            if (MountNative.Mount(null, mount.MountPoint, null, flags, 0) != 0)
                throw MountNative.Error($"remount {mount.MountPoint} read-only");
        }
    }

    private static ulong KeptFlags(IReadOnlyList<string> options) => options.Aggregate(0UL, (flags, option) => flags | option switch
    {
        "nosuid" => MountNative.MS_NOSUID,
        "nodev" => MountNative.MS_NODEV,
        "noexec" => MountNative.MS_NOEXEC,
        "noatime" => MountNative.MS_NOATIME,
        "nodiratime" => MountNative.MS_NODIRATIME,
        "relatime" => MountNative.MS_RELATIME,
        _ => 0UL,
    });

    /// <summary>Makes the root a private, unbindable mount of itself (once; it stays across agent restarts).</summary>
    private void EnsureRoot()
    {
        lock (RootSetup)
        {
            Directory.CreateDirectory(Root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            File.SetUnixFileMode(Root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            if (!MountTable.IsMountPoint(Root))
            {
                if (MountNative.Mount(Root, Root, null, MountNative.MS_BIND, 0) != 0)
                    throw MountNative.Error($"bind staging root {Root} onto itself");
                logger.LogInformation("made mount staging root {Root} a mount of its own", Root);
            }
            // Unbindable is also private: mounts below receive and send no propagation events.
            if (MountNative.Mount(null, Root, null, MountNative.MS_UNBINDABLE, 0) != 0)
                throw MountNative.Error($"make staging root {Root} unbindable");
        }
    }

    private static string CheckedId(string kernelId) =>
        ScratchDirectory.IsValidSessionId(kernelId) ? kernelId : throw new ArgumentException($"'{kernelId}' is not a valid session id", nameof(kernelId));
}
