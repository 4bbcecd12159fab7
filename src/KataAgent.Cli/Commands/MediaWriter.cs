using System.CommandLine;
using System.Text;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

/// <summary>
/// A run's media output (plots, images, html): each item goes to a file, DIR/RUN-N.EXT (data: URIs decoded,
/// svg and html written as text), and one line on stderr says where; with writing off, a placeholder line
/// "[media image/png, 1234 bytes]" instead.
/// </summary>
internal sealed class MediaWriter(string? directory, string runId)
{
    public const string DefaultDirectory = "kata-agent-media";

    private int _count;

    /// <summary>Writes (or not) one media item; returns the line to show the user.</summary>
    public string Write(ConsoleItem item)
    {
        string mime = item.HasMime && item.Mime.Length > 0 ? item.Mime : "";
        byte[] content = Decode(item.Data, ref mime);
        string shownMime = mime.Length > 0 ? mime : "of unknown type";
        if (directory is null)
            return $"[media {shownMime}, {content.Length} bytes]";
        _count++;
        var path = Path.Combine(directory, $"{SafeName(runId)}-{_count}{Extension(mime)}");
        try
        {
            Directory.CreateDirectory(directory);
            File.WriteAllBytes(path, content);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"[media {shownMime}, {content.Length} bytes: could not write {path}: {e.Message}]";
        }
        return $"[media {shownMime} written to {path} ({content.Length} bytes)]";
    }

    /// <summary>
    /// The bytes of a media item: a data: URI is decoded (its mime fills in a missing one); bare base64 of a
    /// binary image type (Jupyter's shape) too; anything else is text, written as UTF-8.
    /// </summary>
    internal static byte[] Decode(string data, ref string mime)
    {
        if (data.StartsWith("data:", StringComparison.OrdinalIgnoreCase) && data.IndexOf(',') is var comma and > 0)
        {
            var header = data[5..comma];
            var payload = data[(comma + 1)..];
            var parts = header.Split(';');
            if (mime.Length == 0 && parts[0].Length > 0)
                mime = parts[0];
            if (parts.Skip(1).Any(p => p.Equals("base64", StringComparison.OrdinalIgnoreCase)))
            {
                if (TryBase64(payload, out var bytes))
                    return bytes;
            }
            else
            {
                return Encoding.UTF8.GetBytes(Uri.UnescapeDataString(payload));
            }
        }
        else if (IsBinaryImage(mime) && TryBase64(data, out var bytes))
        {
            return bytes;
        }
        return Encoding.UTF8.GetBytes(data);
    }

    private static bool TryBase64(string text, out byte[] bytes)
    {
        var buffer = new byte[text.Length * 3 / 4 + 3];
        if (Convert.TryFromBase64String(text.Trim(), buffer, out int written))
        {
            bytes = buffer[..written];
            return true;
        }
        bytes = [];
        return false;
    }

    private static bool IsBinaryImage(string mime) =>
        mime.StartsWith("image/", StringComparison.OrdinalIgnoreCase) && !mime.Equals("image/svg+xml", StringComparison.OrdinalIgnoreCase);

    internal static string Extension(string mime) => mime.ToLowerInvariant() switch
    {
        "image/png" => ".png",
        "image/jpeg" or "image/jpg" => ".jpg",
        "image/gif" => ".gif",
        "image/webp" => ".webp",
        "image/svg+xml" => ".svg",
        "text/html" => ".html",
        "text/plain" => ".txt",
        "text/markdown" => ".md",
        "application/json" => ".json",
        "application/pdf" => ".pdf",
        "text/latex" => ".tex",
        _ => ".bin",
    };

    private static string SafeName(string name)
    {
        var safe = new string(name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '_').ToArray());
        return safe.Length > 0 ? safe : "run";
    }

    /// <summary>The --media-dir / --no-media-files options of exec, input and run.</summary>
    internal sealed class Options
    {
        private readonly Option<string?> _directory = new("--media-dir")
        {
            Description = $"Write the code's media output (plots, images, html) to files in this directory (default ./{DefaultDirectory})",
        };

        private readonly Option<bool> _off = new("--no-media-files")
        {
            Description = "Do not write media output to files; print a placeholder line like '[media image/png, 1234 bytes]' instead",
        };

        public void AddTo(Command command)
        {
            command.Options.Add(_directory);
            command.Options.Add(_off);
        }

        public MediaWriter Create(ParseResult parse, string runId)
        {
            if (parse.GetValue(_off))
            {
                if (parse.GetValue(_directory) is not null)
                    throw new CliException("give --media-dir or --no-media-files, not both", 2);
                return new MediaWriter(null, runId);
            }
            return new MediaWriter(parse.GetValue(_directory) ?? DefaultDirectory, runId);
        }
    }
}
