using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace KataAgent.Core.Scratch;

/// <summary>
/// A session's scratch directory on the host: <c>&lt;root&gt;/&lt;sessionId&gt;/work</c>, shared read-write
/// into the guest as /home/work and owned by the guest user, and <c>&lt;root&gt;/&lt;sessionId&gt;/config</c>,
/// shared read-only as /home/config and written only by the agent. The session dir itself is
/// never visible to the guest.
/// </summary>
public sealed partial class ScratchDirectory
{
    public const string GuestWorkPath = "/home/work";
    public const string GuestConfigPath = "/home/config";
    public const string EnvironFile = "environ.txt";
    public const string ResourceFile = "resource.txt";
    public const string IntrinsicPortsFile = "intrinsic-ports.json";
    public const string RunnerFile = "runner.json";
    public const string BootstrapFile = "bootstrap.sh";
    public const string RunnerCurveKeyFile = KataAgent.Runner.Protocol.RunnerCurveKeys.RunnerFileName;

    private const int AtFdCwd = -100;
    private static readonly UnixFileMode DirMode = (UnixFileMode)0x1ED; // 0755
    private static readonly UnixFileMode ConfigFileMode = (UnixFileMode)0x1A4; // 0644
    private static readonly UnixFileMode SecretFileMode = (UnixFileMode)0x180; // 0600

    /// <summary>bootstrap.sh in the work dir: the guest user's, readable and runnable by it alone.</summary>
    public static readonly UnixFileMode BootstrapFileMode = (UnixFileMode)0x1C0; // 0700
    private static readonly JsonSerializerOptions Compact = new() { WriteIndented = false };

    private ScratchDirectory(string scratchRoot, string sessionId, ScratchFilesOptions? fileOptions)
    {
        ValidateSessionId(sessionId);
        ArgumentException.ThrowIfNullOrEmpty(scratchRoot);
        ScratchRoot = Path.GetFullPath(scratchRoot);
        SessionId = sessionId;
        SessionPath = Path.Combine(ScratchRoot, sessionId);
        WorkPath = Path.Combine(SessionPath, "work");
        ConfigPath = Path.Combine(SessionPath, "config");
        Files = new ScratchFiles(WorkPath, fileOptions);
    }

    public string ScratchRoot { get; }
    public string SessionId { get; }
    public string SessionPath { get; }
    public string WorkPath { get; }
    public string ConfigPath { get; }

    /// <summary>Safe transfer through the work dir.</summary>
    public ScratchFiles Files { get; }

    public bool Exists => Directory.Exists(SessionPath);

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    private static partial Regex SessionIdPattern();

    /// <summary>A session id becomes a path component: letters, digits, '.', '_', '-', starting with a letter or digit.</summary>
    public static bool IsValidSessionId(string? sessionId) => sessionId != null && SessionIdPattern().IsMatch(sessionId);

    public static void ValidateSessionId(string? sessionId)
    {
        if (!IsValidSessionId(sessionId))
            throw new ArgumentException($"invalid session id '{sessionId}': 1-128 of [A-Za-z0-9._-], starting with a letter or digit", nameof(sessionId));
    }

    /// <summary>An existing session's scratch (restart, recovery, removal); nothing is touched.</summary>
    public static ScratchDirectory Open(string scratchRoot, string sessionId, ScratchFilesOptions? fileOptions = null) =>
        new(scratchRoot, sessionId, fileOptions);

    /// <summary>
    /// Creates the session dir (which must not exist yet), the work dir owned by
    /// <paramref name="ownerUid"/>:<paramref name="ownerGid"/>, and the config dir with its files.
    /// Leaves nothing behind when it fails.
    /// </summary>
    public static async Task<ScratchDirectory> CreateAsync(string scratchRoot, string sessionId, ScratchConfig config,
        int ownerUid, int ownerGid, ScratchFilesOptions? fileOptions = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        var scratch = new ScratchDirectory(scratchRoot, sessionId, fileOptions);
        Directory.CreateDirectory(scratch.ScratchRoot);
        if (Native.MkdirAt(AtFdCwd, scratch.SessionPath, 0x1C0) != 0)
        {
            var err = Marshal.GetLastPInvokeError();
            throw err == Native.EEXIST
                ? new IOException($"scratch dir {scratch.SessionPath} already exists")
                : Errno.Exception(err, $"mkdir {scratch.SessionPath}");
        }
        try
        {
            File.SetUnixFileMode(scratch.SessionPath, DirMode);
            MakeDirectory(scratch.WorkPath, (uint)ownerUid, (uint)ownerGid);
            MakeDirectory(scratch.ConfigPath, null, null);
            await scratch.WriteConfigAsync(config, (uint)ownerUid, (uint)ownerGid, cancellationToken).ConfigureAwait(false);
            return scratch;
        }
        catch
        {
            await scratch.RemoveAsync(keep: false, CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>(Re)writes every config file atomically, and the dotfiles into the work dir; environ.txt stays root's.</summary>
    public Task WriteConfigAsync(ScratchConfig config, CancellationToken cancellationToken = default) =>
        WriteConfigAsync(config, 0, 0, cancellationToken);

    /// <summary>
    /// (Re)writes every config file atomically, and the dotfiles into the work dir. environ.txt (the session's secrets)
    /// is 0600 and owned by the guest user, whose code reads it.
    /// </summary>
    public async Task WriteConfigAsync(ScratchConfig config, uint guestUid, uint guestGid, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        var guest = (guestUid, guestGid);
        await WriteConfigFileAsync(EnvironFile, KeyValueLines(config.Environ, EnvironFile), SecretFileMode, guest, cancellationToken).ConfigureAwait(false);
        await WriteConfigFileAsync(ResourceFile, KeyValueLines(config.Resource, ResourceFile), ConfigFileMode, cancellationToken).ConfigureAwait(false);
        var ports = JsonSerializer.Serialize(new { replin = config.IntrinsicPorts.ReplIn, replout = config.IntrinsicPorts.ReplOut }, Compact);
        await WriteConfigFileAsync(IntrinsicPortsFile, ports, ConfigFileMode, cancellationToken).ConfigureAwait(false);
        if (config.Runner != null)
            await WriteConfigFileAsync(RunnerFile, config.Runner.ToJsonString(Compact), ConfigFileMode, cancellationToken).ConfigureAwait(false);
        if (config.RunnerCurveKeyFile != null)
            await WriteConfigFileAsync(RunnerCurveKeyFile, config.RunnerCurveKeyFile, SecretFileMode, cancellationToken).ConfigureAwait(false);
        foreach (var dotfile in config.Dotfiles)
        {
            // Backend.AI gives dotfile paths either relative to or under /home/work.
            var relative = dotfile.Path.StartsWith(GuestWorkPath + "/", StringComparison.Ordinal)
                ? dotfile.Path[(GuestWorkPath.Length + 1)..]
                : dotfile.Path;
            await Files.WriteFileAsync(relative, Encoding.UTF8.GetBytes(dotfile.Content), dotfile.Mode, createParents: true, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Writes one file of the config dir via a temp file and rename, so the guest never sees half a file.</summary>
    public Task WriteConfigFileAsync(string name, string content, UnixFileMode mode, CancellationToken cancellationToken = default) =>
        WriteConfigFileAsync(name, content, mode, null, cancellationToken);

    /// <summary>Like the other overload; the file is given to <paramref name="owner"/> before it appears under its name.</summary>
    public Task WriteConfigFileAsync(string name, string content, UnixFileMode mode, (uint Uid, uint Gid)? owner, CancellationToken cancellationToken = default) =>
        WriteFileAtomicallyAsync(ConfigPath, name, content, mode, owner, cancellationToken);

    /// <summary>
    /// Writes a file into the top of the work dir at create time (bootstrap.sh), before the guest has run: via a
    /// temp file given to <paramref name="owner"/> and renamed into place, like the config files.
    /// </summary>
    public Task WriteWorkFileAsync(string name, string content, UnixFileMode mode, (uint Uid, uint Gid) owner, CancellationToken cancellationToken = default) =>
        WriteFileAtomicallyAsync(WorkPath, name, content, mode, owner, cancellationToken);

    private static async Task WriteFileAtomicallyAsync(string directory, string name, string content, UnixFileMode mode, (uint Uid, uint Gid)? owner, CancellationToken cancellationToken)
    {
        if (name.Length == 0 || name.Contains('/') || name is "." or ".." || name.Contains('\0'))
            throw new ArgumentException($"invalid file name '{name}'", nameof(name));
        var target = Path.Combine(directory, name);
        var temp = Path.Combine(directory, $".{name}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}.tmp");
        try
        {
            var stream = new FileStream(temp, new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                UnixCreateMode = mode,
                Options = FileOptions.Asynchronous,
            });
            await using (stream.ConfigureAwait(false))
            {
                await stream.WriteAsync(Encoding.UTF8.GetBytes(content), cancellationToken).ConfigureAwait(false);
                await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
                if (owner is var (uid, gid) && Native.Fchown((int)stream.SafeFileHandle.DangerousGetHandle(), uid, gid) != 0)
                    throw Errno.Exception(Marshal.GetLastPInvokeError(), $"chown {temp} to {uid}:{gid}");
            }
            File.SetUnixFileMode(temp, mode); // the umask may have narrowed UnixCreateMode
            File.Move(temp, target, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>
    /// Deletes the whole session dir without following any symlink the guest left in it; with
    /// <paramref name="keep"/> it stays for inspection. Idempotent. Returns whether anything was removed.
    /// </summary>
    public Task<bool> RemoveAsync(bool keep = false, CancellationToken cancellationToken = default)
    {
        if (keep)
            return Task.FromResult(false);
        return Task.Run(() =>
        {
            var fd = Native.OpenAt(AtFdCwd, ScratchRoot, Native.O_PATH | Native.O_DIRECTORY | Native.O_CLOEXEC, 0);
            if (fd < 0)
            {
                var err = Marshal.GetLastPInvokeError();
                return err == Native.ENOENT ? false : throw Errno.Exception(err, $"open {ScratchRoot}");
            }
            using var root = new UnixFd(fd);
            if (Native.StatxAt(root.Fd, SessionId, Native.AT_SYMLINK_NOFOLLOW, Native.STATX_BASIC_STATS, out _) != 0)
                return false;
            TreeRemover.Remove(root, SessionId, cancellationToken);
            return true;
        }, cancellationToken);
    }

    private static void MakeDirectory(string path, uint? uid, uint? gid)
    {
        if (Native.MkdirAt(AtFdCwd, path, 0x1C0) != 0)
            throw Errno.Exception(Marshal.GetLastPInvokeError(), $"mkdir {path}");
        var fd = Native.OpenAt(AtFdCwd, path, Native.O_RDONLY | Native.O_DIRECTORY | Native.O_NOFOLLOW | Native.O_CLOEXEC, 0);
        if (fd < 0)
            throw Errno.Exception(Marshal.GetLastPInvokeError(), $"open {path}");
        using var dir = new UnixFd(fd);
        if (uid is { } u && gid is { } g && Native.Fchown(dir.Fd, u, g) != 0)
            throw Errno.Exception(Marshal.GetLastPInvokeError(), $"chown {path} to {u}:{g}");
        if (Native.Fchmod(dir.Fd, (uint)DirMode) != 0)
            throw Errno.Exception(Marshal.GetLastPInvokeError(), $"chmod {path}");
    }

    private static string KeyValueLines(IReadOnlyDictionary<string, string> values, string file)
    {
        var text = new StringBuilder();
        foreach (var (key, value) in values.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            // One KEY=VALUE per line and nothing else: Backend.AI's runner stops reading at the first line without '='.
            if (key.Length == 0 || key[0] == '#' || key.Any(char.IsWhiteSpace) || key.IndexOfAny(['=', '\0']) >= 0)
                throw new ArgumentException($"{file}: invalid key '{key}'");
            if (value.IndexOfAny(['\n', '\r', '\0']) >= 0)
                throw new ArgumentException($"{file}: the value of '{key}' contains a line break or NUL");
            text.Append(key).Append('=').Append(value).Append('\n');
        }
        return text.ToString();
    }
}
