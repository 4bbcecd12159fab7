using System.Runtime.CompilerServices;
using System.Text;

namespace KataAgent.Core.Sessions;

/// <summary>
/// The per-session container log. The shim appends to it (O_APPEND), so keeping it under its cap
/// means cutting it back to its newest half in place; the writer simply carries on at the new end.
/// </summary>
public static class SessionLog
{
    /// <summary>An empty log, root's alone (0600): the runner's output may carry the session's secrets.</summary>
    public static void Create(string path)
    {
        using var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
        // Create keeps the mode of a file that was already there.
        File.SetUnixFileMode(stream.SafeFileHandle, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    public static async Task EnforceCapAsync(string path, long maxBytes, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(path) || !File.Exists(path))
            return;
        var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 4096, useAsync: true);
        await using var streamDisposal = stream.ConfigureAwait(false);
        if (stream.Length <= maxBytes)
            return;
        var keep = (int)Math.Min(maxBytes / 2, int.MaxValue);
        var tail = new byte[keep];
        stream.Seek(-keep, SeekOrigin.End);
        await stream.ReadExactlyAsync(tail, cancellationToken).ConfigureAwait(false);
        var marker = Encoding.UTF8.GetBytes($"[kata-agent: log cut to its last {keep} bytes]\n");
        stream.SetLength(0);
        stream.Seek(0, SeekOrigin.Begin);
        await stream.WriteAsync(marker, cancellationToken).ConfigureAwait(false);
        await stream.WriteAsync(tail, cancellationToken).ConfigureAwait(false);
    }

    public static async Task<string> ReadAsync(string path, long maxBytes, CancellationToken cancellationToken)
    {
        if (!File.Exists(path))
            return "";
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 4096, useAsync: true);
        await using var streamDisposal = stream.ConfigureAwait(false);
        if (stream.Length > maxBytes)
            stream.Seek(-maxBytes, SeekOrigin.End);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return await reader.ReadToEndAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Existing content, then appended chunks as the file grows (inotify via FileSystemWatcher, no busy polling).</summary>
    public static async IAsyncEnumerable<string> FollowAsync(string path, long maxBytes, Func<bool> ended,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
#pragma warning disable CA2000 // no OS handle; a watcher callback still in flight after the end must not meet a disposed semaphore
        var changed = new SemaphoreSlim(0);
#pragma warning restore CA2000
        using var watcher = new FileSystemWatcher(Path.GetDirectoryName(path)!, Path.GetFileName(path))
        {
            NotifyFilter = NotifyFilters.Size | NotifyFilters.LastWrite,
        };
        watcher.Changed += (_, _) => changed.Release();
        watcher.EnableRaisingEvents = true;

        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 4096, useAsync: true);
        await using var streamDisposal = stream.ConfigureAwait(false);
        if (stream.Length > maxBytes)
            stream.Seek(-maxBytes, SeekOrigin.End);
        var decoder = Encoding.UTF8.GetDecoder();
        var bytes = new byte[64 * 1024];
        var chars = new char[Encoding.UTF8.GetMaxCharCount(bytes.Length)];
        while (!cancellationToken.IsCancellationRequested)
        {
            if (stream.Position > stream.Length)
                stream.Seek(0, SeekOrigin.Begin); // the log was cut back
            var read = await stream.ReadAsync(bytes, cancellationToken).ConfigureAwait(false);
            if (read > 0)
            {
                var count = decoder.GetChars(bytes, 0, read, chars, 0);
                if (count > 0)
                    yield return new string(chars, 0, count);
                continue;
            }
            if (ended())
                yield break;
            // Woken by a write, or after a second anyway (a cut log or a missed notification).
            await changed.WaitAsync(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
        }
    }
}
