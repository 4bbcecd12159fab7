using System.Buffers;
using System.Formats.Tar;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;

namespace KataAgent.Core.Scratch;

public sealed record ScratchFilesOptions
{
    public ScratchPathResolution Resolution { get; init; } = ScratchPathResolution.Auto;

    /// <summary>
    /// Refuse to download a file with more than one hard link. Off by default: the guest can only
    /// hard-link files on the same mount, i.e. other files of its own work dir (link(2) across
    /// mounts is EXDEV, and the work dir is its own bind mount on both sides), so a second link
    /// never exposes a host file — while package managers (conda, pip caches) hard-link freely.
    /// </summary>
    public bool RefuseHardLinks { get; init; }

    public int MaxListEntries { get; init; } = 100_000;

    /// <summary>Entries (files, directories, links) one tar download may hold; each costs ~1.5 KB of headers even when empty.</summary>
    public int MaxTarEntries { get; init; } = 100_000;

    /// <summary>Directory depth a tar download descends before refusing.</summary>
    public int MaxTarDepth { get; init; } = 256;

    public UnixFileMode NewFileMode { get; init; } = (UnixFileMode)0x1A4; // 0644
    public UnixFileMode NewDirectoryMode { get; init; } = (UnixFileMode)0x1ED; // 0755
}

/// <summary>
/// File transfer through the host side of a session's work dir (/home/work in the guest). The guest
/// owns that tree and may put a symlink, hard link, fifo or device anywhere at any moment, so every
/// operation resolves paths without following symlinks (openat2 RESOLVE_BENEATH|NO_SYMLINKS, or an
/// O_NOFOLLOW walk), only ever opens the content of regular files, and writes through a fresh temp
/// file renamed into place — it never writes into an existing inode. Losing a race makes an
/// operation fail; it never reaches outside the work dir.
/// </summary>
public sealed class ScratchFiles
{
    private const int CopyBufferSize = 128 * 1024;
    private readonly PathResolver _resolver;

    public ScratchFiles(string workPath, ScratchFilesOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(workPath);
        WorkPath = Path.GetFullPath(workPath);
        Options = options ?? new ScratchFilesOptions();
        _resolver = new PathResolver(Options.Resolution);
    }

    public string WorkPath { get; }
    public ScratchFilesOptions Options { get; }

    /// <summary>
    /// Streams <paramref name="content"/> into a temp file next to the target and renames it over the
    /// target. Refuses (and removes the partial file) once more than <paramref name="maxBytes"/> arrive.
    /// New files belong to the work dir's owner. Returns the number of bytes written.
    /// </summary>
    public Task<long> UploadAsync(string relativePath, Stream content, long maxBytes, bool createParents, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(content);
        ArgumentOutOfRangeException.ThrowIfNegative(maxBytes);
        return WriteAsync(relativePath, (handle, ct) => CopyLimitedAsync(relativePath, content, handle, maxBytes, ct), null, createParents, cancellationToken);
    }

    /// <summary>Writes a small file (dotfiles and the like) with an explicit mode, atomically.</summary>
    public Task WriteFileAsync(string relativePath, ReadOnlyMemory<byte> content, UnixFileMode mode, bool createParents, CancellationToken cancellationToken = default) =>
        WriteAsync(relativePath, async (handle, ct) =>
        {
            await RandomAccess.WriteAsync(handle, content, 0, ct).ConfigureAwait(false);
            return content.Length;
        }, mode, createParents, cancellationToken);

    /// <summary>Opens a regular file for reading. Symlinks, directories, fifos, sockets and devices are refused.</summary>
    public Task<Stream> OpenDownloadAsync(string relativePath, CancellationToken cancellationToken = default) =>
        OpenDownloadAsync(relativePath, long.MaxValue, cancellationToken);

    /// <summary>
    /// Like <see cref="OpenDownloadAsync(string, CancellationToken)"/>, but refuses a file larger than
    /// <paramref name="maxBytes"/> (a sparse 1 TiB file costs the guest nothing). The stream delivers exactly
    /// the size seen at open: what the guest appends meanwhile is not read.
    /// </summary>
    public Task<Stream> OpenDownloadAsync(string relativePath, long maxBytes, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var path = ScratchPath.Parse(relativePath);
        if (path.IsRoot)
            throw new ScratchPathException(relativePath, ScratchPathError.IsDirectory, "is the work dir");
        using var root = PathResolver.OpenWorkRoot(WorkPath);
        using var leaf = _resolver.OpenLeaf(root, path);
#pragma warning disable CA2000 // the returned stream owns it; the refusal below disposes it
        var handle = OpenRegularForRead(path.Original, leaf, out var st);
#pragma warning restore CA2000
        if ((long)st.Size > maxBytes)
        {
            handle.Dispose();
            throw new ScratchPathException(relativePath, ScratchPathError.TooLarge,
                $"is too large to download: {(long)st.Size} bytes, the limit is {maxBytes} (config limits.download_max)");
        }
        return Task.FromResult<Stream>(new FixedLengthStream(handle, (long)st.Size));
    }

    /// <summary>
    /// Writes a tar (PAX) of the directory's contents, entry names relative to it: regular files,
    /// directories and symlinks (as links, never followed); fifos, sockets and devices are skipped,
    /// and so are other filesystems mounted below. Entries come in readdir order. Refuses once the file
    /// data would exceed <paramref name="maxTotalBytes"/> or the entries <see cref="ScratchFilesOptions.MaxTarEntries"/>;
    /// what was written by then is incomplete. Returns the data bytes.
    /// </summary>
    public async Task<long> DownloadDirectoryAsTarAsync(string relativePath, Stream output, long maxTotalBytes, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(output);
        var path = ScratchPath.Parse(relativePath);
        using var root = PathResolver.OpenWorkRoot(WorkPath);
        using var dir = _resolver.OpenDirectory(root, path, path.Components.Length);
        var dirStat = dir.Stat();
        var writer = new TarWriter(output, TarEntryFormat.Pax, leaveOpen: true);
        await using (writer)
        {
            var budget = new TarBudget(maxTotalBytes, Options.MaxTarEntries);
            await AddDirectoryAsync(path, writer, dir, dirStat, "", 0, budget, cancellationToken).ConfigureAwait(false);
            return budget.Used;
        }
    }

    /// <summary>
    /// The entries of a directory, as lstat sees them, sorted by name. Reading stops at
    /// <see cref="ScratchFilesOptions.MaxListEntries"/>: a bigger directory gives that many entries
    /// (the first ones readdir returns, not the first by name) with <see cref="ScratchListing.Truncated"/> set.
    /// </summary>
    public Task<ScratchListing> ListAsync(string relativePath, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var path = ScratchPath.Parse(relativePath);
        using var root = PathResolver.OpenWorkRoot(WorkPath);
        using var dir = _resolver.OpenDirectory(root, path, path.Components.Length);
        var names = new List<string>();
        var truncated = false;
        foreach (var name in Native.EnumerateDirectory(dir.Fd))
        {
            if (names.Count == Options.MaxListEntries)
            {
                truncated = true;
                break;
            }
            names.Add(name);
        }
        names.Sort(StringComparer.Ordinal);
        var entries = new List<ScratchEntry>(names.Count);
        foreach (var name in names)
        {
            if (Native.StatxAt(dir.Fd, name, Native.AT_SYMLINK_NOFOLLOW, Native.STATX_BASIC_STATS, out var st) != 0)
                continue; // vanished since readdir
            var target = st.IsSymlink ? Native.ReadLink(dir.Fd, name) : null;
            entries.Add(new ScratchEntry(name, ScratchEntry.TypeOf(st), (long)st.Size, ScratchEntry.ModeOf(st),
                ScratchEntry.MTimeOf(st), target, (int)st.NLink));
        }
        return Task.FromResult(new ScratchListing(entries, truncated, Options.MaxListEntries));
    }

    /// <summary>Deletes a file, link, special file or a whole directory tree (links removed, never followed).</summary>
    public Task DeleteAsync(string relativePath, CancellationToken cancellationToken = default)
    {
        var path = ScratchPath.Parse(relativePath);
        if (path.IsRoot)
            throw new ScratchPathException(relativePath, ScratchPathError.IsDirectory, "is the work dir itself");
        return Task.Run(() =>
        {
            using var root = PathResolver.OpenWorkRoot(WorkPath);
            using var parent = _resolver.OpenDirectory(root, path, path.Components.Length - 1);
            if (Native.StatxAt(parent.Fd, path.Leaf, Native.AT_SYMLINK_NOFOLLOW, Native.STATX_BASIC_STATS, out _) != 0)
                throw PathResolver.Map(path, Marshal.GetLastPInvokeError(), path.Leaf);
            TreeRemover.Remove(parent, path.Leaf, cancellationToken);
        }, cancellationToken);
    }

    private async Task<long> WriteAsync(string relativePath, Func<SafeFileHandle, CancellationToken, Task<long>> writeContent,
        UnixFileMode? mode, bool createParents, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var path = ScratchPath.Parse(relativePath);
        if (path.IsRoot)
            throw new ScratchPathException(relativePath, ScratchPathError.IsDirectory, "is the work dir");
        using var root = PathResolver.OpenWorkRoot(WorkPath);
        var owner = OwnerFor(root.Stat());
        using var parent = createParents
            ? CreateParents(root, path, owner)
            : _resolver.OpenDirectory(root, path, path.Components.Length - 1);

        var existingMode = CheckReplaceable(path, parent);
        var (tempName, handle) = CreateTemp(path, parent);
        var renamed = false;
        try
        {
            var fd = (int)handle.DangerousGetHandle();
            if (owner is var (uid, gid) && Native.Fchown(fd, uid, gid) != 0)
                throw Errno.Exception(Marshal.GetLastPInvokeError(), "fchown upload");
            Native.Fchmod(fd, (uint)(mode ?? existingMode ?? Options.NewFileMode));
            var written = await writeContent(handle, cancellationToken).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();

            // The guest can see the temp name too: rename only if it still is our file.
            if (Native.StatxAt(parent.Fd, tempName, Native.AT_SYMLINK_NOFOLLOW, Native.STATX_BASIC_STATS, out var atName) != 0
                || !atName.SameInode(Fstat(handle)))
            {
                throw new ScratchPathException(relativePath, ScratchPathError.Raced, "the temporary upload file was replaced");
            }

            CheckReplaceable(path, parent);
            // rename(2) replaces the name, never what a link there points to, so losing a race with
            // the check above only replaces the guest's own link.
            if (Native.RenameAt(parent.Fd, tempName, parent.Fd, path.Leaf) != 0)
            {
                var err = Marshal.GetLastPInvokeError();
                throw err == Native.EISDIR
                    ? new ScratchPathException(relativePath, ScratchPathError.IsDirectory, "is a directory")
                    : PathResolver.Map(path, err, path.Leaf);
            }
            renamed = true;
            return written;
        }
        finally
        {
            handle.Dispose();
            if (!renamed)
                Native.UnlinkAt(parent.Fd, tempName, 0);
        }
    }

    private async Task<long> CopyLimitedAsync(string relativePath, Stream content, SafeFileHandle handle, long maxBytes, CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(CopyBufferSize);
        try
        {
            var total = 0L;
            while (true)
            {
                var n = await content.ReadAsync(buffer.AsMemory(0, CopyBufferSize), cancellationToken).ConfigureAwait(false);
                if (n == 0)
                    return total;
                if (total + n > maxBytes)
                    throw new ScratchPathException(relativePath, ScratchPathError.TooLarge, $"is too large: more than {maxBytes} bytes");
                await RandomAccess.WriteAsync(handle, buffer.AsMemory(0, n), total, cancellationToken).ConfigureAwait(false);
                total += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Refuses to replace anything but a regular file; returns its permissions to keep them.</summary>
    private static UnixFileMode? CheckReplaceable(ScratchPath path, UnixFd parent)
    {
        if (Native.StatxAt(parent.Fd, path.Leaf, Native.AT_SYMLINK_NOFOLLOW, Native.STATX_BASIC_STATS, out var st) != 0)
        {
            var err = Marshal.GetLastPInvokeError();
            return err == Native.ENOENT ? null : throw PathResolver.Map(path, err, path.Leaf);
        }
        if (st.IsSymlink)
            throw new ScratchPathException(path.Original, ScratchPathError.IsSymlink, "is a symlink");
        if (st.IsDirectory)
            throw new ScratchPathException(path.Original, ScratchPathError.IsDirectory, "is a directory");
        if (!st.IsRegular)
            throw new ScratchPathException(path.Original, ScratchPathError.NotRegularFile, "is not a regular file");
        return (UnixFileMode)(st.Mode & 0x1FF);
    }

    private static (string Name, SafeFileHandle Handle) CreateTemp(ScratchPath path, UnixFd parent)
    {
        for (var attempt = 0; attempt < 16; attempt++)
        {
            var name = $".kata-upload-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8))}.tmp";
            // O_EXCL never follows a link already at the name; O_NOFOLLOW is belt and braces.
            var fd = Native.OpenAt(parent.Fd, name, Native.O_WRONLY | Native.O_CREAT | Native.O_EXCL | Native.O_NOFOLLOW | Native.O_CLOEXEC, 0x180);
            if (fd >= 0)
                return (name, new SafeFileHandle(fd, ownsHandle: true));
            var err = Marshal.GetLastPInvokeError();
            if (err != Native.EEXIST)
                throw PathResolver.Map(path, err, null);
        }
        throw new ScratchPathException(path.Original, ScratchPathError.Raced, "could not create a temporary upload file");
    }

    /// <summary>Walks the parent components, creating missing ones; an existing symlink anywhere is refused.</summary>
    private UnixFd CreateParents(UnixFd root, ScratchPath path, (uint Uid, uint Gid)? owner)
    {
        var current = _resolver.OpenDirectory(root, path, 0);
        try
        {
            foreach (var component in path.Parents)
            {
                const int Flags = Native.O_RDONLY | Native.O_NOCTTY | Native.O_CLOEXEC;
                var fd = Native.OpenAt(current.Fd, component, Flags | Native.O_DIRECTORY | Native.O_NOFOLLOW, 0);
                if (fd < 0 && Marshal.GetLastPInvokeError() == Native.ENOENT)
                {
                    if (Native.MkdirAt(current.Fd, component, 0x1C0) != 0 && Marshal.GetLastPInvokeError() != Native.EEXIST)
                        throw PathResolver.Map(path, Marshal.GetLastPInvokeError(), component);
                    // If the guest swapped the new directory for a link already, O_NOFOLLOW refuses it.
                    fd = Native.OpenAt(current.Fd, component, Flags | Native.O_DIRECTORY | Native.O_NOFOLLOW, 0);
                    if (fd >= 0)
                    {
                        if (owner is var (uid, gid))
                            Native.Fchown(fd, uid, gid);
                        Native.Fchmod(fd, (uint)Options.NewDirectoryMode);
                    }
                }
                if (fd < 0)
                {
                    var err = Marshal.GetLastPInvokeError();
                    if (err == Native.ENOTDIR && Native.StatxAt(current.Fd, component, Native.AT_SYMLINK_NOFOLLOW, Native.STATX_BASIC_STATS, out var st) == 0 && st.IsSymlink)
                        err = Native.ELOOP;
                    throw PathResolver.Map(path, err, component);
                }
                current.Dispose();
                current = new UnixFd(fd);
            }
            return current;
        }
        catch
        {
            current.Dispose();
            throw;
        }
    }

    /// <summary>Files the agent (root) creates go to the work dir's owner, so the guest user can change them.</summary>
    private static (uint Uid, uint Gid)? OwnerFor(in Native.Statx rootStat)
    {
        var euid = Native.GetEuid();
        return euid == 0 && (rootStat.Uid != 0 || rootStat.Gid != 0) ? (rootStat.Uid, rootStat.Gid) : null;
    }

    private SafeFileHandle OpenRegularForRead(string path, UnixFd leaf, out Native.Statx st)
    {
        st = leaf.Stat();
        if (st.IsSymlink)
            throw new ScratchPathException(path, ScratchPathError.IsSymlink, "is a symlink");
        if (st.IsDirectory)
            throw new ScratchPathException(path, ScratchPathError.IsDirectory, "is a directory");
        if (!st.IsRegular)
            throw new ScratchPathException(path, ScratchPathError.NotRegularFile, "is not a regular file");
        if (Options.RefuseHardLinks && st.NLink > 1)
            throw new ScratchPathException(path, ScratchPathError.HardLinked, $"has {st.NLink} hard links");
        // Reopen the very inode we just checked (an O_PATH fd has no side effects, unlike opening a
        // fifo or a device the guest may have swapped in under the same name).
        var fd = Native.OpenAt(-100, $"/proc/self/fd/{leaf.Fd}", Native.O_RDONLY | Native.O_NOCTTY | Native.O_CLOEXEC, 0);
        if (fd < 0)
            throw Errno.Exception(Marshal.GetLastPInvokeError(), $"reopen {path}");
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (!Fstat(handle).SameInode(st))
        {
            handle.Dispose();
            throw new ScratchPathException(path, ScratchPathError.Raced, "changed while being opened");
        }
        return handle;
    }

    private static Native.Statx Fstat(SafeFileHandle handle)
    {
        if (Native.StatxAt((int)handle.DangerousGetHandle(), "", Native.AT_EMPTY_PATH | Native.AT_SYMLINK_NOFOLLOW, Native.STATX_BASIC_STATS, out var st) != 0)
            throw Errno.Exception(Marshal.GetLastPInvokeError(), "fstat");
        return st;
    }

    private async Task AddDirectoryAsync(ScratchPath top, TarWriter writer, UnixFd dir, Native.Statx topStat, string prefix, int depth,
        TarBudget budget, CancellationToken cancellationToken)
    {
        // readdir order, not sorted: sorting would hold a whole directory's names in memory.
        foreach (var name in Native.EnumerateDirectory(dir.Fd))
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (Native.StatxAt(dir.Fd, name, Native.AT_SYMLINK_NOFOLLOW, Native.STATX_BASIC_STATS, out var st) != 0)
                continue; // vanished since readdir
            var entryName = prefix + name;
            // Every entry costs a header block (and a PAX header) even when it has no data.
            budget.CountEntry(top.Original);
            if (st.IsDirectory)
            {
                if (!st.SameDevice(topStat))
                    continue; // a mount point: not part of the work dir's own files
                if (depth + 1 > Options.MaxTarDepth)
                    throw new ScratchPathException(top.Original, ScratchPathError.TooDeep, $"is nested deeper than {Options.MaxTarDepth} levels");
                var fd = Native.OpenAt(dir.Fd, name, Native.O_PATH | Native.O_DIRECTORY | Native.O_NOFOLLOW | Native.O_CLOEXEC, 0);
                if (fd < 0)
                    continue; // swapped for something else meanwhile
                using var child = new UnixFd(fd);
                var childStat = child.Stat();
                if (!childStat.SameInode(st))
                    continue;
                await writer.WriteEntryAsync(Describe(new PaxTarEntry(TarEntryType.Directory, entryName + "/"), childStat), cancellationToken).ConfigureAwait(false);
                await AddDirectoryAsync(top, writer, child, topStat, entryName + "/", depth + 1, budget, cancellationToken).ConfigureAwait(false);
            }
            else if (st.IsSymlink)
            {
                var target = Native.ReadLink(dir.Fd, name);
                if (target == null)
                    continue;
                await writer.WriteEntryAsync(Describe(new PaxTarEntry(TarEntryType.SymbolicLink, entryName) { LinkName = target }, st), cancellationToken).ConfigureAwait(false);
            }
            else if (st.IsRegular)
            {
                var fd = Native.OpenAt(dir.Fd, name, Native.O_PATH | Native.O_NOFOLLOW | Native.O_CLOEXEC, 0);
                if (fd < 0)
                    continue;
                SafeFileHandle handle;
                Native.Statx fileStat;
                using (var leaf = new UnixFd(fd))
                {
                    try
                    {
#pragma warning disable CA2000 // the entry's stream below owns it; the size refusal disposes it
                        handle = OpenRegularForRead(entryName, leaf, out fileStat);
#pragma warning restore CA2000
                    }
                    catch (ScratchPathException e) when (e.Error is ScratchPathError.IsSymlink or ScratchPathError.IsDirectory
                        or ScratchPathError.NotRegularFile or ScratchPathError.Raced)
                    {
                        continue; // swapped for something else meanwhile: skip like any special file
                    }
                }
                var size = (long)fileStat.Size;
                if (budget.Used + size > budget.Max)
                {
                    handle.Dispose();
                    throw new ScratchPathException(top.Original, ScratchPathError.TooLarge, $"is too large: more than {budget.Max} bytes of files");
                }
                var data = new FixedLengthStream(handle, size);
                await using var dataDisposal = data.ConfigureAwait(false);
                var entry = Describe(new PaxTarEntry(TarEntryType.RegularFile, entryName) { DataStream = data }, fileStat);
                await writer.WriteEntryAsync(entry, cancellationToken).ConfigureAwait(false);
                budget.Used += size;
            }
            // fifos, sockets and devices: skipped, never opened.
        }
    }

    private static PaxTarEntry Describe(PaxTarEntry entry, in Native.Statx st)
    {
        entry.Mode = (UnixFileMode)(st.Mode & 0xFFF);
        entry.ModificationTime = ScratchEntry.MTimeOf(st);
        entry.Uid = (int)st.Uid;
        entry.Gid = (int)st.Gid;
        return entry;
    }

    private sealed class TarBudget(long max, int maxEntries)
    {
        public long Max => max;
        public long Used { get; set; }
        public int Entries { get; private set; }

        public void CountEntry(string top)
        {
            if (++Entries > maxEntries)
                throw new ScratchPathException(top, ScratchPathError.TooLarge, $"has too many entries for one download: more than {maxEntries}");
        }
    }
}
