namespace KataAgent.Core.Sessions;

/// <summary>
/// Session records on disk (one JSON file each, written atomically), for recovery after a restart.
/// Files and directory are root's alone (0600/0700): a record holds the session's runner keys.
/// </summary>
public sealed class SessionStore(string directory)
{
    private const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    public string Directory { get; } = directory;

    public async Task SaveAsync(SessionRecord record, CancellationToken cancellationToken = default)
    {
        System.IO.Directory.CreateDirectory(Directory, DirectoryMode);
        // Tightened also when an older agent made it with the default mode.
        File.SetUnixFileMode(Directory, DirectoryMode);
        var path = PathOf(record.KernelId);
        var temp = path + ".tmp";
        // Created 0600 (never briefly world-readable); a leftover temp file from a crash is replaced.
        File.Delete(temp);
        var stream = new FileStream(temp, new FileStreamOptions
        {
            Mode = System.IO.FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = FileMode,
            Options = FileOptions.Asynchronous,
        });
        await using (stream.ConfigureAwait(false))
        {
            await stream.WriteAsync(System.Text.Encoding.UTF8.GetBytes(record.ToJson()), cancellationToken).ConfigureAwait(false);
        }
        File.Move(temp, path, overwrite: true);
    }

    public void Delete(string kernelId)
    {
        var path = PathOf(kernelId);
        if (File.Exists(path))
            File.Delete(path);
    }

    public async Task<IReadOnlyList<SessionRecord>> LoadAllAsync(CancellationToken cancellationToken = default)
    {
        var result = new List<SessionRecord>();
        if (!System.IO.Directory.Exists(Directory))
            return result;
        foreach (var file in System.IO.Directory.EnumerateFiles(Directory, "*.json"))
            result.Add(SessionRecord.FromJson(await File.ReadAllTextAsync(file, cancellationToken).ConfigureAwait(false)));
        return result;
    }

    private string PathOf(string kernelId) => Path.Combine(Directory, kernelId + ".json");
}
