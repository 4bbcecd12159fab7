using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace KataAgent.Core.Locking;

/// <summary>Who holds a data dir: what kind of agent, its pid and where its API listens (if anywhere).</summary>
public sealed record DataDirLockHolder(string Kind, int Pid, string? Socket)
{
    public override string ToString() =>
        $"kata-agent {Kind} (pid {Pid.ToString(CultureInfo.InvariantCulture)}{(Socket is { Length: > 0 } s ? $", socket {s}" : "")})";
}

/// <summary>Another agent holds the data dir.</summary>
public sealed class DataDirLockedException(string dataDir, DataDirLockHolder? holder)
    : InvalidOperationException($"the data dir {dataDir} is in use by {holder?.ToString() ?? "another kata-agent"}: one agent per data dir " +
        "(stop that one, talk to it with --socket, or give this one another agent.data_dir)")
{
    public string DataDir { get; } = dataDir;
    public DataDirLockHolder? Holder { get; } = holder;
}

/// <summary>
/// One agent per data dir: an exclusive flock on <c>DATA_DIR/agent.lock</c>, held for the agent's life. The kernel drops
/// it when the process ends, however it ends, so a killed agent never leaves a stale lock; the file itself stays
/// (deleting a lock file races with the next holder) and only its contents name the current holder.
/// </summary>
public sealed partial class DataDirLock : IDisposable
{
    public const string FileName = "agent.lock";
    private const int LOCK_EX = 2;
    private const int LOCK_NB = 4;
    private const int EWOULDBLOCK = 11;

    private const int O_RDONLY = 0;
    private const int O_RDWR = 2;
    private const int O_CREAT = 0x40;
    private const int O_CLOEXEC = 0x80000;

    private readonly SafeFileHandle _file;

    private DataDirLock(SafeFileHandle file, string path)
    {
        _file = file;
        Path = path;
    }

    public string Path { get; }

    /// <summary>Takes the lock at once or throws <see cref="DataDirLockedException"/> naming the holder; never waits.</summary>
    public static DataDirLock Acquire(string dataDir, DataDirLockHolder self)
    {
        var path = System.IO.Path.Combine(dataDir, FileName);
        // open(2) itself: .NET's FileStream takes a shared flock of its own on every open, which would collide with ours.
        var file = Open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0x180 /* 0600 */);
        try
        {
            if (Flock(file, LOCK_EX | LOCK_NB) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == EWOULDBLOCK)
                    throw new DataDirLockedException(dataDir, ReadHolder(dataDir));
                throw new IOException($"cannot lock {path}: {Marshal.GetPInvokeErrorMessage(errno)}");
            }
            var text = Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture,
                $"pid={self.Pid}\nkind={self.Kind}\nsocket={self.Socket}\nsince={DateTimeOffset.UtcNow:O}\n"));
            RandomAccess.SetLength(file, 0);
            RandomAccess.Write(file, text, 0);
            return new DataDirLock(file, path);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>What the lock file says of its holder; null when nobody wrote it (yet).</summary>
    public static DataDirLockHolder? ReadHolder(string dataDir)
    {
        string text;
        try
        {
            using var file = Open(System.IO.Path.Combine(dataDir, FileName), O_RDONLY | O_CLOEXEC, 0);
            var buffer = new byte[4096];
            text = Encoding.UTF8.GetString(buffer, 0, RandomAccess.Read(file, buffer, 0));
        }
        catch (IOException)
        {
            return null;
        }
        var fields = text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
        if (!fields.TryGetValue("pid", out var pidText) || !int.TryParse(pidText, CultureInfo.InvariantCulture, out var pid))
            return null;
        return new DataDirLockHolder(fields.GetValueOrDefault("kind", "agent"), pid, fields.GetValueOrDefault("socket") is { Length: > 0 } s ? s : null);
    }

    private static SafeFileHandle Open(string path, int flags, int mode)
    {
        var fd = OpenFile(path, flags, mode);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"cannot open {path}: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    public void Dispose() => _file.Dispose();

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenFile(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "flock", SetLastError = true)]
    private static partial int Flock(SafeFileHandle fd, int operation);
}
