using System.Runtime.InteropServices;
using KataAgent.Core.Scratch;

namespace KataAgent.Core.Mounts;

/// <summary>What kind of object a pinned source is: the staging target must be of the same kind.</summary>
public enum MountSourceKind
{
    Directory,
    File,
}

/// <summary>
/// An O_PATH descriptor of a mount source, reached from an allowed root one component at a time
/// without following any symlink. Whatever happens to the path afterwards, this is the inode that
/// gets mounted.
/// </summary>
public sealed class PinnedMountSource : IDisposable
{
    private readonly UnixFd _fd;

    internal PinnedMountSource(MountSourcePath path, UnixFd fd, Native.Statx stat)
    {
        Path = path;
        _fd = fd;
        Stat = stat;
        Kind = stat.IsDirectory ? MountSourceKind.Directory : MountSourceKind.File;
    }

    public MountSourcePath Path { get; }
    public MountSourceKind Kind { get; }
    public ulong Inode => Stat.Ino;
    internal Native.Statx Stat { get; }

    /// <summary>The magic link the kernel resolves to exactly this descriptor's file, never by name.</summary>
    public string ProcPath => $"/proc/self/fd/{_fd.Fd}";

    public void Dispose() => _fd.Dispose();
}

/// <summary>
/// A request's mount sources, all opened and checked (<see cref="MountSourceOpener"/>) but not yet staged: the
/// descriptors hold the inodes that <see cref="MountStaging.Stage(string, PinnedMountSources)"/> will mount, so
/// the check and the mount can be separate steps without a window between them.
/// </summary>
public sealed class PinnedMountSources : IDisposable
{
    private readonly IReadOnlyList<(PinnedMountSource Source, bool ReadOnly)> _sources;

    private PinnedMountSources(IReadOnlyList<(PinnedMountSource Source, bool ReadOnly)> sources) => _sources = sources;

    public int Count => _sources.Count;

    public (PinnedMountSource Source, bool ReadOnly) this[int index] => _sources[index];

    /// <summary>Opens every source (request order), or refuses the first bad one, naming it; then nothing stays open.</summary>
    /// <exception cref="MountSourceException">A source is not allowed, missing, or reached through a link or '..'.</exception>
    public static PinnedMountSources Open(IReadOnlyList<MountSource> sources, IReadOnlyList<string> allowedRoots)
    {
        ArgumentNullException.ThrowIfNull(sources);
        var opened = new List<(PinnedMountSource, bool)>();
        try
        {
            foreach (var source in sources)
                opened.Add((MountSourceOpener.Open(source.HostPath, allowedRoots), source.ReadOnly));
            return new PinnedMountSources(opened);
        }
        catch
        {
            foreach (var (source, _) in opened)
                source.Dispose();
            throw;
        }
    }

    /// <summary>Closes the descriptors (idempotent). What was staged stays mounted.</summary>
    public void Dispose()
    {
        foreach (var (source, _) in _sources)
            source.Dispose();
    }
}

/// <summary>Opens a requested host path as a <see cref="PinnedMountSource"/>, or refuses it naming the path and the component.</summary>
public static class MountSourceOpener
{
    private const int AtFdCwd = -100;

    public static PinnedMountSource Open(string hostPath, IReadOnlyList<string> allowedRoots) =>
        Open(MountSourcePath.Parse(hostPath, allowedRoots));

    public static PinnedMountSource Open(MountSourcePath path)
    {
        // The root is the operator's: it may itself be reached through a link they made.
        var rootFd = Native.OpenAt(AtFdCwd, path.Root, Native.O_PATH | Native.O_DIRECTORY | Native.O_CLOEXEC, 0);
        if (rootFd < 0)
            throw Refuse(path, $"cannot be opened: its allowed root '{path.Root}' is not an accessible directory ({Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())})");
        var current = new UnixFd(rootFd);
        try
        {
            var stat = current.Stat();
            for (var i = 0; i < path.Components.Count; i++)
            {
                // O_NOFOLLOW with O_PATH opens a symlink itself instead of failing: fstat then says what it is.
                var fd = Native.OpenAt(current.Fd, path.Components[i], Native.O_PATH | Native.O_NOFOLLOW | Native.O_CLOEXEC, 0);
                if (fd < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    throw Refuse(path, errno == Native.ENOENT
                        ? $"does not exist ('{path.Prefix(i + 1)}' is missing)"
                        : $"cannot be opened at '{path.Prefix(i + 1)}': {Marshal.GetPInvokeErrorMessage(errno)}");
                }
                var next = new UnixFd(fd);
                current.Dispose();
                current = next;
                stat = current.Stat();
                var last = i == path.Components.Count - 1;
                if (stat.IsSymlink)
                    throw Refuse(path, $"goes through a symlink at '{path.Prefix(i + 1)}': symlinks are not followed in mount sources");
                if (!last && !stat.IsDirectory)
                    throw Refuse(path, $"goes through '{path.Prefix(i + 1)}', which is not a directory");
            }
            if (!stat.IsDirectory && !stat.IsRegular)
                throw Refuse(path, "is neither a directory nor a regular file");
            return new PinnedMountSource(path, current, stat);
        }
        catch
        {
            current.Dispose();
            throw;
        }
    }

    private static MountSourceException Refuse(MountSourcePath path, string reason) => new(path.Original, reason);
}
