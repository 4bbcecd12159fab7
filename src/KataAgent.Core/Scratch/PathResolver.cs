using System.Runtime.InteropServices;

namespace KataAgent.Core.Scratch;

/// <summary>How paths below the work dir are resolved. Both refuse every symlink.</summary>
public enum ScratchPathResolution
{
    /// <summary>openat2 when the kernel has it (Linux 5.6+), else the component walk.</summary>
    Auto,
    /// <summary>openat(O_NOFOLLOW|O_DIRECTORY) one component at a time from the work dir's fd.</summary>
    ComponentWalk,
}

/// <summary>
/// Turns a validated relative path into an fd without ever following a symlink, so a guest that
/// swaps a directory for a link at any moment can at worst make the operation fail.
/// </summary>
internal sealed class PathResolver(ScratchPathResolution mode)
{
    private const int AtFdCwd = -100;

    // null = not probed yet. A seccomp filter (nested container) may answer ENOSYS or EPERM.
    private static bool? s_openat2Works;

    private bool UseOpenat2 => mode == ScratchPathResolution.Auto && s_openat2Works != false;

    public static UnixFd OpenWorkRoot(string workPath)
    {
        var fd = Native.OpenAt(AtFdCwd, workPath, Native.O_PATH | Native.O_DIRECTORY | Native.O_NOFOLLOW | Native.O_CLOEXEC, 0);
        if (fd < 0)
            throw Errno.Exception(Marshal.GetLastPInvokeError(), $"open work dir {workPath}");
        return new UnixFd(fd);
    }

    /// <summary>An O_PATH fd of the directory named by the first <paramref name="count"/> components.</summary>
    public UnixFd OpenDirectory(UnixFd root, ScratchPath path, int count)
    {
        if (count == 0)
            return Check(path, Native.OpenAt(root.Fd, ".", Native.O_PATH | Native.O_DIRECTORY | Native.O_CLOEXEC, 0), null);
        if (UseOpenat2)
        {
            var fd = TryOpenat2(root, string.Join('/', path.Components, 0, count), Native.O_PATH | Native.O_DIRECTORY | Native.O_CLOEXEC, out var err);
            if (fd != null)
                return fd;
            if (err != Native.ENOSYS)
                throw Map(path, err, null);
        }
        return Walk(root, path, count);
    }

    /// <summary>
    /// An O_PATH fd of the entry itself: a trailing symlink gives the link (the caller refuses it
    /// after fstat), a symlinked parent is refused here.
    /// </summary>
    public UnixFd OpenLeaf(UnixFd root, ScratchPath path)
    {
        if (UseOpenat2)
        {
            var fd = TryOpenat2(root, path.Joined, Native.O_PATH | Native.O_NOFOLLOW | Native.O_CLOEXEC, out var err);
            if (fd != null)
                return fd;
            if (err != Native.ENOSYS)
                throw Map(path, err, null);
        }
        using var parent = Walk(root, path, path.Components.Length - 1);
        return Check(path, Native.OpenAt(parent.Fd, path.Leaf, Native.O_PATH | Native.O_NOFOLLOW | Native.O_CLOEXEC, 0), path.Leaf);
    }

    private static UnixFd? TryOpenat2(UnixFd root, string relative, int flags, out int errno)
    {
        var how = new Native.OpenHow
        {
            Flags = (ulong)flags,
            Resolve = Native.RESOLVE_BENEATH | Native.RESOLVE_NO_SYMLINKS | Native.RESOLVE_NO_MAGICLINKS,
        };
        for (var attempt = 0; ; attempt++)
        {
            var fd = Native.OpenAt2(root.Fd, relative, how);
            if (fd >= 0)
            {
                s_openat2Works = true;
                errno = 0;
                return new UnixFd(fd);
            }
            errno = Marshal.GetLastPInvokeError();
            // EAGAIN: a concurrent rename made the kernel give up the safe lookup; it is retryable.
            if (errno == Native.EAGAIN && attempt < 8)
                continue;
            if ((errno == Native.ENOSYS || errno == Native.EPERM) && s_openat2Works != true)
            {
                s_openat2Works = false;
                errno = Native.ENOSYS;
            }
            return null;
        }
    }

    private static UnixFd Walk(UnixFd root, ScratchPath path, int count)
    {
        var current = Check(path, Native.OpenAt(root.Fd, ".", Native.O_PATH | Native.O_DIRECTORY | Native.O_CLOEXEC, 0), null);
        try
        {
            for (var i = 0; i < count; i++)
            {
                var component = path.Components[i];
                var fd = Native.OpenAt(current.Fd, component, Native.O_PATH | Native.O_DIRECTORY | Native.O_NOFOLLOW | Native.O_CLOEXEC, 0);
                var next = Check(path, fd, component, current);
                current.Dispose();
                current = next;
            }
            return current;
        }
        catch
        {
            current.Dispose();
            throw;
        }
    }

    private static UnixFd Check(ScratchPath path, int fd, string? component, UnixFd? parent = null)
    {
        if (fd >= 0)
            return new UnixFd(fd);
        var err = Marshal.GetLastPInvokeError();
        // O_PATH|O_NOFOLLOW|O_DIRECTORY on a link reports ENOTDIR: say what it really is.
        if (err == Native.ENOTDIR && parent != null && component != null
            && Native.StatxAt(parent.Fd, component, Native.AT_SYMLINK_NOFOLLOW, Native.STATX_BASIC_STATS, out var st) == 0 && st.IsSymlink)
        {
            err = Native.ELOOP;
        }

        throw Map(path, err, component);
    }

    public static Exception Map(ScratchPath path, int errno, string? component)
    {
        var which = component == null ? "a path component" : $"'{component}'";
        return errno switch
        {
            Native.ENOENT => new ScratchPathException(path.Original, ScratchPathError.NotFound, "does not exist"),
            Native.ELOOP => new ScratchPathException(path.Original, ScratchPathError.IsSymlink, $"{which} is a symlink"),
            Native.EXDEV => new ScratchPathException(path.Original, ScratchPathError.EscapesWorkDir, "escapes the work dir"),
            Native.ENOTDIR => new ScratchPathException(path.Original, ScratchPathError.NotDirectory, $"{which} is not a directory"),
            Native.EAGAIN => new ScratchPathException(path.Original, ScratchPathError.Raced, "changed while being resolved"),
            _ => new ScratchPathException(path.Original, ScratchPathError.IoError, Marshal.GetPInvokeErrorMessage(errno),
                Errno.Exception(errno, "resolve")),
        };
    }
}
