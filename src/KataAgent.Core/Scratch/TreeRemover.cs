using System.Runtime.InteropServices;

namespace KataAgent.Core.Scratch;

/// <summary>
/// rm -rf for a tree the guest controls. Every step is an fd-relative unlinkat/openat(O_NOFOLLOW),
/// so a symlink is removed as a link and its target is never touched. It holds two fds at most,
/// whatever the depth: it walks down by name and back up through "..", checking that ".." is the
/// directory it came from (a guest that moves directories meanwhile makes it start over from the
/// top, never wander above it). It does not cross into another filesystem (a mount point).
/// </summary>
internal static class TreeRemover
{
    private const int MaxRestarts = 64;
    private const int MaxRetries = 10_000;
    private const int DirFlags = Native.O_RDONLY | Native.O_NOCTTY | Native.O_CLOEXEC;

    /// <summary>Removes <paramref name="name"/> inside <paramref name="parent"/>, whatever it is. Missing is fine.</summary>
    public static void Remove(UnixFd parent, string name, CancellationToken cancellationToken)
    {
        for (var restart = 0; restart <= MaxRestarts; restart++)
        {
            if (Native.UnlinkAt(parent.Fd, name, 0) == 0)
                return;
            var err = Marshal.GetLastPInvokeError();
            if (err == Native.ENOENT)
                return;
            // unlink(2) of a directory is EISDIR on Linux (EPERM per POSIX).
            if (err != Native.EISDIR && err != Native.EPERM)
                throw Errno.Exception(err, $"unlink {name}");
            if (RemoveDirectory(parent, name, cancellationToken))
                return;
        }
        throw new IOException($"remove {name}: the tree kept changing while being removed");
    }

    /// <summary>False when the tree changed under us and the caller should start over.</summary>
    private static bool RemoveDirectory(UnixFd parent, string name, CancellationToken cancellationToken)
    {
        var fd = Native.OpenAt(parent.Fd, name, DirFlags | Native.O_DIRECTORY | Native.O_NOFOLLOW, 0);
        if (fd < 0)
        {
            var err = Marshal.GetLastPInvokeError();
            if (err == Native.ENOENT)
                return true;
            if (err is Native.ELOOP or Native.ENOTDIR)
                return false; // swapped for a non-directory: unlink it on the next round
            throw Errno.Exception(err, $"open {name}");
        }
        var current = new UnixFd(fd);
        try
        {
            var top = current.Stat();
            var currentStat = top;
            // For each level below the top: the child's name and the identity of its parent.
            var ancestors = new List<(string Child, ulong ParentIno)>();
            var retries = 0;
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                MakeWritable(current, currentStat);
                var subdir = EmptyExceptOneDirectory(current);
                if (subdir != null)
                {
                    var childFd = Native.OpenAt(current.Fd, subdir, DirFlags | Native.O_DIRECTORY | Native.O_NOFOLLOW, 0);
                    if (childFd < 0)
                    {
                        var err = Marshal.GetLastPInvokeError();
                        if (err is Native.ENOENT or Native.ELOOP or Native.ENOTDIR && ++retries < MaxRetries)
                            continue; // changed meanwhile: read this directory again
                        throw Errno.Exception(err, $"open {subdir}");
                    }
                    var child = new UnixFd(childFd);
                    var childStat = child.Stat();
                    if (!childStat.SameDevice(top))
                    {
                        child.Dispose();
                        throw new IOException($"remove {name}: '{subdir}' is a mount point; refusing to delete into another filesystem");
                    }
                    ancestors.Add((subdir, currentStat.Ino));
                    current.Dispose();
                    current = child;
                    currentStat = childStat;
                    continue;
                }

                if (ancestors.Count == 0)
                {
                    current.Dispose();
                    if (Native.UnlinkAt(parent.Fd, name, Native.AT_REMOVEDIR) == 0)
                        return true;
                    var err = Marshal.GetLastPInvokeError();
                    if (err == Native.ENOENT)
                        return true;
                    if (err is Native.ENOTEMPTY or Native.EEXIST or Native.ENOTDIR)
                        return false;
                    throw Errno.Exception(err, $"rmdir {name}");
                }

                var (childName, expectedIno) = ancestors[^1];
                ancestors.RemoveAt(ancestors.Count - 1);
                var upFd = Native.OpenAt(current.Fd, "..", DirFlags | Native.O_DIRECTORY | Native.O_NOFOLLOW, 0);
                if (upFd < 0)
                    throw Errno.Exception(Marshal.GetLastPInvokeError(), $"open .. below {name}");
                var up = new UnixFd(upFd);
                current.Dispose();
                current = up;
                currentStat = up.Stat();
                if (currentStat.Ino != expectedIno || !currentStat.SameDevice(top))
                    return false; // moved: ".." is no longer where we came from
                // ENOTEMPTY (refilled meanwhile) or ENOENT: the loop reads this level again.
                Native.UnlinkAt(current.Fd, childName, Native.AT_REMOVEDIR);
            }
        }
        finally
        {
            current.Dispose();
        }
    }

    /// <summary>
    /// Unlinks every non-directory; returns the first subdirectory left, or null when empty. Reads
    /// lazily (a million-entry directory is never held in memory); entries unlinked while reading may
    /// make readdir skip others, so it reads again until a pass unlinks nothing.
    /// </summary>
    private static string? EmptyExceptOneDirectory(UnixFd dir)
    {
        while (true)
        {
            var unlinked = false;
            foreach (var entry in Native.EnumerateDirectory(dir.Fd))
            {
                if (Native.UnlinkAt(dir.Fd, entry, 0) == 0)
                {
                    unlinked = true;
                    continue;
                }
                var err = Marshal.GetLastPInvokeError();
                if (err == Native.ENOENT)
                    continue;
                if (err == Native.EISDIR
                    || err == Native.EPERM && Native.StatxAt(dir.Fd, entry, Native.AT_SYMLINK_NOFOLLOW, Native.STATX_BASIC_STATS, out var st) == 0 && st.IsDirectory)
                {
                    return entry;
                }

                throw Errno.Exception(err, $"unlink {entry}");
            }
            if (!unlinked)
                return null;
        }
    }

    /// <summary>A read-only directory (the guest can chmod 0500) cannot be emptied by a non-root agent.</summary>
    private static void MakeWritable(UnixFd dir, in Native.Statx st)
    {
        const int OwnerRwx = 0x1C0;
        if ((st.Mode & OwnerRwx) != OwnerRwx)
            Native.Fchmod(dir.Fd, (uint)((st.Mode & 0xFFF) | OwnerRwx));
    }
}
