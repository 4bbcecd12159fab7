namespace KataAgent.Core.Sessions;

/// <summary>Session records on disk (one JSON file each, written atomically), for recovery after a restart.</summary>
public sealed class SessionStore(string directory)
{
    public string Directory { get; } = directory;

    public async Task SaveAsync(SessionRecord record, CancellationToken cancellationToken = default)
    {
        System.IO.Directory.CreateDirectory(Directory);
        var path = PathOf(record.KernelId);
        var temp = path + ".tmp";
        await File.WriteAllTextAsync(temp, record.ToJson(), cancellationToken).ConfigureAwait(false);
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
