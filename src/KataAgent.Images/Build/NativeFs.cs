using System.ComponentModel;
using System.Runtime.InteropServices;

namespace KataAgent.Images;

/// <summary>File metadata as lstat/statx reports it (the link itself for symlinks).</summary>
internal readonly record struct UnixStat(
    uint Mode, uint Uid, uint Gid, uint NLink, ulong Inode, long Size, long MtimeSeconds,
    uint DevMajor, uint DevMinor, uint RdevMajor, uint RdevMinor)
{
    public const uint TypeMask = 0xF000; // S_IFMT
    public const uint Socket = 0xC000;
    public const uint Symlink = 0xA000;
    public const uint Regular = 0x8000;
    public const uint Block = 0x6000;
    public const uint Directory = 0x4000;
    public const uint Char = 0x2000;
    public const uint Fifo = 0x1000;

    public uint Type => Mode & TypeMask;

    public uint Permissions => Mode & 0xFFF; // 07777: rwx bits plus setuid, setgid, sticky

    public (uint Major, uint Minor, ulong Inode) FileId => (DevMajor, DevMinor, Inode);
}

/// <summary>The few libc calls the image builder needs that .NET does not expose (owner, inode and device of a path; umount).</summary>
internal static partial class NativeFs
{
    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const uint StatxBasicStats = 0x7ff;
    private const int MntDetach = 2;

    // struct statx is the same on every Linux architecture, unlike struct stat.
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private struct StatxBuffer
    {
        [FieldOffset(16)] public uint NLink;
        [FieldOffset(20)] public uint Uid;
        [FieldOffset(24)] public uint Gid;
        [FieldOffset(28)] public ushort Mode;
        [FieldOffset(32)] public ulong Ino;
        [FieldOffset(40)] public ulong Size;
        [FieldOffset(112)] public long MtimeSec;
        [FieldOffset(128)] public uint RdevMajor;
        [FieldOffset(132)] public uint RdevMinor;
        [FieldOffset(136)] public uint DevMajor;
        [FieldOffset(140)] public uint DevMinor;
    }

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int StatxNative(int dirfd, string path, int flags, uint mask, out StatxBuffer buffer);

    [LibraryImport("libc", EntryPoint = "umount2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Umount2Native(string target, int flags);

    /// <summary>lstat: metadata of the path itself, not following a final symlink.</summary>
    public static UnixStat LStat(string path)
    {
        if (StatxNative(AtFdCwd, path, AtSymlinkNoFollow, StatxBasicStats, out var b) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"statx({path}) failed: {new Win32Exception(errno).Message}", errno);
        }

        return new UnixStat(b.Mode, b.Uid, b.Gid, b.NLink, b.Ino, (long)b.Size, b.MtimeSec, b.DevMajor, b.DevMinor, b.RdevMajor, b.RdevMinor);
    }

    /// <summary>Lazily unmounts every mount at or below <paramref name="directory"/>, deepest first.</summary>
    public static void UnmountBelow(string directory)
    {
        foreach (var mountPoint in MountsBelow(directory).OrderByDescending(m => m.Length))
        {
            if (Umount2Native(mountPoint, MntDetach) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new IOException($"cannot unmount {mountPoint}: {new Win32Exception(errno).Message}", errno);
            }
        }
    }

    /// <summary>Mount points at or below <paramref name="directory"/>, from /proc/self/mountinfo.</summary>
    public static IReadOnlyList<string> MountsBelow(string directory)
    {
        var root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        var result = new List<string>();
        if (!File.Exists("/proc/self/mountinfo"))
        {
            return result;
        }

        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var fields = line.Split(' ');
            if (fields.Length < 5)
            {
                continue;
            }

            var mountPoint = UnescapeMountInfo(fields[4]);
            if (mountPoint == root || mountPoint.StartsWith(root + "/", StringComparison.Ordinal))
            {
                result.Add(mountPoint);
            }
        }

        return result;
    }

    private static string UnescapeMountInfo(string s)
    {
        if (!s.Contains('\\', StringComparison.Ordinal))
        {
            return s;
        }

        var sb = new System.Text.StringBuilder(s.Length);
        for (var i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && i + 3 < s.Length && IsOctal(s[i + 1]) && IsOctal(s[i + 2]) && IsOctal(s[i + 3]))
            {
                sb.Append((char)(((s[i + 1] - '0') * 64) + ((s[i + 2] - '0') * 8) + (s[i + 3] - '0')));
                i += 3;
            }
            else
            {
                sb.Append(s[i]);
            }
        }

        return sb.ToString();

        static bool IsOctal(char c) => c is >= '0' and <= '7';
    }

    /// <summary>
    /// Deletes a directory tree that may contain a half-built root filesystem: first unmounts anything mounted inside
    /// it (a killed debootstrap leaves proc and sys mounted), then refuses to delete if a mount remains.
    /// </summary>
    public static void DeleteTree(string directory)
    {
        if (!Directory.Exists(directory))
        {
            return;
        }

        UnmountBelow(directory);
        var remaining = MountsBelow(directory);
        if (remaining.Count > 0)
        {
            throw new IOException($"refusing to delete {directory}: still mounted inside it: {string.Join(", ", remaining)}");
        }

        Directory.Delete(directory, recursive: true);
    }
}
