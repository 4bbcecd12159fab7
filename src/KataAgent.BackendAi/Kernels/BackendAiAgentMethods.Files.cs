using System.Formats.Tar;
using System.Text;
using System.Text.Json;
using KataAgent.BackendAi.Rpc;
using KataAgent.Core.Scratch;
using static KataAgent.BackendAi.Kernels.RpcArgs;

namespace KataAgent.BackendAi.Kernels;

/// <summary>get_logs and the scratch (work/) files: upload_file, download_file (a tar), download_single, list_files.</summary>
public sealed partial class BackendAiAgentMethods
{
    private async Task<object?> GetLogsAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var logs = await _agent.ReadLogAsync(Id(Get(call, 0, "kernel_id"), "kernel_id"), cancellationToken).ConfigureAwait(false);
        return new Dictionary<object, object?> { ["logs"] = logs };
    }

    /// <summary>A path as the manager gives it (relative to the work dir, or absolute under it) relative to the work dir.</summary>
    private string WorkRelative(string path)
    {
        var prefix = _options.WorkDir.TrimEnd('/');
        if (path == prefix)
            return "";
        if (path.StartsWith(prefix + "/", StringComparison.Ordinal))
            return path[(prefix.Length + 1)..];
        if (path.StartsWith('/'))
            throw new BackendAiRpcException("PermissionError", $"'{path}' is outside the work dir {prefix}");
        return path;
    }

    private async Task<object?> UploadFileAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var kernelId = Id(Get(call, 0, "kernel_id"), "kernel_id");
        var filename = WorkRelative(Text(Get(call, 1, "filename"), "filename"));
        var data = Get(call, 2, "filedata") as byte[] ?? throw TypeError("filedata", "bytes", Get(call, 2, "filedata"));
        await WithScratchErrors(() => _agent.Files(kernelId).WriteFileAsync(filename, data, (UnixFileMode)0x1A4 /* 0644 */, createParents: true, cancellationToken))
            .ConfigureAwait(false);
        return null;
    }

    /// <summary>A tar of the file or directory (its entries under the path's own name), at most <see cref="BackendAiAgentOptions.MaxDownloadBytes"/>.</summary>
    private async Task<object?> DownloadFileAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var kernelId = Id(Get(call, 0, "kernel_id"), "kernel_id");
        var path = WorkRelative(Text(Get(call, 1, "filepath"), "filepath"));
        var files = _agent.Files(kernelId);
        var top = path.Length == 0 ? Path.GetFileName(_options.WorkDir.TrimEnd('/')) : Path.GetFileName(path.TrimEnd('/'));
        using var output = new MemoryStream();
        await WithScratchErrors(async () =>
        {
            Stream? file = null;
            try
            {
                file = await files.OpenDownloadAsync(path, _options.MaxDownloadBytes, cancellationToken).ConfigureAwait(false);
            }
            catch (ScratchPathException e) when (e.Error == ScratchPathError.IsDirectory)
            {
            }
            if (file is not null)
            {
                await using (file.ConfigureAwait(false))
                    await WriteFileTarAsync(output, top, file, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await WriteDirectoryTarAsync(files, path, top, output, cancellationToken).ConfigureAwait(false);
            }
        }).ConfigureAwait(false);
        if (output.Length > _options.MaxDownloadBytes)
            throw new BackendAiRpcException("ValueError", $"Too large archive file exceeding {_options.MaxDownloadBytes} bytes ('{path}')");
        return output.ToArray();
    }

    private static async Task WriteFileTarAsync(Stream output, string name, Stream content, CancellationToken cancellationToken)
    {
        var writer = new TarWriter(output, TarEntryFormat.Pax, leaveOpen: true);
        await using (writer.ConfigureAwait(false))
        {
            var entry = new PaxTarEntry(TarEntryType.RegularFile, name)
            {
                DataStream = content,
                Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead,
                ModificationTime = DateTimeOffset.UtcNow,
            };
            await writer.WriteEntryAsync(entry, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Core writes the directory's contents relative to it; Backend.AI's tar (docker's archive) puts them under its name.</summary>
    private async Task WriteDirectoryTarAsync(ScratchFiles files, string path, string top, Stream output, CancellationToken cancellationToken)
    {
        using var inner = new MemoryStream();
        await files.DownloadDirectoryAsTarAsync(path, inner, _options.MaxDownloadBytes, cancellationToken).ConfigureAwait(false);
        inner.Position = 0;
        var writer = new TarWriter(output, TarEntryFormat.Pax, leaveOpen: true);
        await using (writer.ConfigureAwait(false))
        {
            await writer.WriteEntryAsync(new PaxTarEntry(TarEntryType.Directory, top + "/")
            {
                Mode = (UnixFileMode)0x1ED, // 0755
                ModificationTime = DateTimeOffset.UtcNow,
            }, cancellationToken).ConfigureAwait(false);
            var reader = new TarReader(inner, leaveOpen: true);
            await using (reader.ConfigureAwait(false))
            {
                while (await reader.GetNextEntryAsync(copyData: false, cancellationToken).ConfigureAwait(false) is { } entry)
                {
                    entry.Name = top + "/" + entry.Name;
                    if (entry.EntryType != TarEntryType.Directory || entry.Name != top + "/")
                        await writer.WriteEntryAsync(entry, cancellationToken).ConfigureAwait(false);
                }
            }
        }
    }

    private async Task<object?> DownloadSingleAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var kernelId = Id(Get(call, 0, "kernel_id"), "kernel_id");
        var path = WorkRelative(Text(Get(call, 1, "filepath"), "filepath"));
        return await WithScratchErrors(async () =>
        {
            var file = await _agent.Files(kernelId).OpenDownloadAsync(path, _options.MaxDownloadBytes, cancellationToken).ConfigureAwait(false);
            await using (file.ConfigureAwait(false))
            {
                using var content = new MemoryStream();
                await file.CopyToAsync(content, cancellationToken).ConfigureAwait(false);
                return content.ToArray();
            }
        }).ConfigureAwait(false);
    }

    /// <summary>{"files": JSON text of [{mode, size, ctime, mtime, atime, filename}], "errors", "abspath"} as Backend.AI's list_files.</summary>
    private async Task<object?> ListFilesAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var kernelId = Id(Get(call, 0, "kernel_id"), "kernel_id");
        var path = WorkRelative(Text(Get(call, 1, "path"), "path"));
        var listing = await WithScratchErrors(() => _agent.Files(kernelId).ListAsync(path, cancellationToken)).ConfigureAwait(false);
        using var json = new MemoryStream();
        using (var writer = new Utf8JsonWriter(json))
        {
            writer.WriteStartArray();
            foreach (var entry in listing)
            {
                // Core reads the modification time only; ctime and atime repeat it.
                var time = entry.ModifiedAt.ToUnixTimeMilliseconds() / 1000.0;
                writer.WriteStartObject();
                writer.WriteString("mode", FileMode(entry));
                writer.WriteNumber("size", entry.Size);
                writer.WriteNumber("ctime", time);
                writer.WriteNumber("mtime", time);
                writer.WriteNumber("atime", time);
                writer.WriteString("filename", entry.Name);
                writer.WriteEndObject();
            }
            writer.WriteEndArray();
        }
        var prefix = _options.WorkDir.TrimEnd('/');
        return new Dictionary<object, object?>
        {
            ["files"] = Encoding.UTF8.GetString(json.ToArray()),
            ["errors"] = listing.Truncated ? $"listing truncated at {listing.Limit} entries" : "",
            ["abspath"] = path.Length == 0 ? prefix : $"{prefix}/{path.TrimEnd('/')}",
        };
    }

    /// <summary>Python's stat.filemode, e.g. "-rw-r--r--", "drwxr-xr-x".</summary>
    private static string FileMode(ScratchEntry entry)
    {
        var type = entry.Type switch
        {
            ScratchEntryType.Directory => 'd',
            ScratchEntryType.Symlink => 'l',
            ScratchEntryType.File => '-',
            _ => '?',
        };
        var mode = (int)entry.Mode;
        var text = new StringBuilder().Append(type);
        const string letters = "rwxrwxrwx";
        for (var bit = 8; bit >= 0; bit--)
            text.Append((mode & (1 << bit)) != 0 ? letters[8 - bit] : '-');
        return text.ToString();
    }

    private static async Task<T> WithScratchErrors<T>(Func<Task<T>> action)
    {
        try
        {
            return await action().ConfigureAwait(false);
        }
        catch (ScratchPathException e)
        {
            var name = e.Error switch
            {
                ScratchPathError.NotFound => "FileNotFoundError",
                ScratchPathError.IsDirectory => "IsADirectoryError",
                ScratchPathError.NotDirectory => "NotADirectoryError",
                ScratchPathError.AlreadyExists => "FileExistsError",
                ScratchPathError.TooLarge => "ValueError",
                ScratchPathError.InvalidPath => "ValueError",
                ScratchPathError.IoError or ScratchPathError.Raced => "OSError",
                _ => "PermissionError",
            };
            throw new BackendAiRpcException(name, e.Message, e);
        }
    }

    private static Task WithScratchErrors(Func<Task> action) => WithScratchErrors(async () =>
    {
        await action().ConfigureAwait(false);
        return true;
    });
}
