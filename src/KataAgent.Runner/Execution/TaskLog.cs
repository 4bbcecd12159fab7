namespace KataAgent.Runner.Execution;

/// <summary>
/// Copy of batch output in the work dir, as Backend.AI keeps it: <c>.logs/task/XX/YY/REST.log</c> from the hex
/// of BACKENDAI_KERNEL_ID (<c>.logs/task/task.log</c> without a usable id), appended across runs. The file is the
/// session user's own; it stops growing at <see cref="MaxBytes"/> so a chatty or hostile run cannot fill the
/// scratch disk through the runner. Written only from the one pump thread of a run.
/// </summary>
internal sealed class TaskLog : IDisposable
{
    public const long MaxBytes = 16L * 1024 * 1024;
    private static readonly byte[] CutNote = "\n[kata-runner: task log size limit reached; further output is not logged]\n"u8.ToArray();

    private readonly FileStream _file;
    private bool _full;

    private TaskLog(FileStream file)
    {
        _file = file;
        _full = file.Length >= MaxBytes;
    }

    public static string PathFor(RunnerConfig config)
    {
        string root = Path.Combine(config.WorkDir, ".logs", "task");
        if (config.ChildEnvironment.TryGetValue("BACKENDAI_KERNEL_ID", out string? kernelId) && Guid.TryParse(kernelId, out Guid id))
        {
            string hex = id.ToString("N");
            return Path.Combine(root, hex[..2], hex[2..4], hex[4..] + ".log");
        }
        return Path.Combine(root, "task.log");
    }

    /// <summary>Null when the log cannot be written (the run goes on without it).</summary>
    public static TaskLog? TryOpen(RunnerConfig config)
    {
        string path = PathFor(config);
        try
        {
            _ = Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            // A link planted by the user could point the runner's writes elsewhere: log nothing then.
            if (new FileInfo(path).LinkTarget is not null)
            {
                Log.Warn($"task log {path} is a symbolic link; not writing it");
                return null;
            }
            return new TaskLog(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite));
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            Log.Warn($"cannot write the task log {path}: {exception.Message}");
            return null;
        }
    }

    public void Write(ReadOnlySpan<byte> data)
    {
        if (_full)
        {
            return;
        }
        try
        {
            long room = MaxBytes - _file.Length;
            if (data.Length >= room)
            {
                _file.Write(data[..(int)Math.Max(0, room)]);
                _file.Write(CutNote);
                _full = true;
            }
            else
            {
                _file.Write(data);
            }
            _file.Flush();
        }
        catch (IOException exception)
        {
            Log.Warn($"task log write failed: {exception.Message}");
            _full = true;
        }
    }

    public void Dispose() => _file.Dispose();
}
