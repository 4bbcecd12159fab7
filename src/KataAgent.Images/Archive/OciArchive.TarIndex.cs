using System.Formats.Tar;

namespace KataAgent.Images;

// The tar index: where each entry of the (decompressed) archive lies, and reads of the small entries.
public sealed partial class OciArchive
{
    private sealed record TarItem(string Name, TarEntryType Type, long Offset, long Length, string? LinkName);

    private static async Task<Dictionary<string, TarItem>> IndexTarAsync(string displayPath, string tarPath, long fileLength, CancellationToken cancellationToken)
    {
        var entries = new Dictionary<string, TarItem>(StringComparer.Ordinal);
        var stream = new FileStream(tarPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous);
        await using (stream.ConfigureAwait(false))
        {
            var reader = new TarReader(stream, leaveOpen: true);
            await using (reader.ConfigureAwait(false))
            {
                while (true)
                {
                    TarEntry? entry;
                    try
                    {
                        entry = await reader.GetNextEntryAsync(copyData: false, cancellationToken).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is InvalidDataException or EndOfStreamException or FormatException or ArgumentException)
                    {
                        throw new ImageArchiveException(ArchiveProblem.InvalidFormat, displayPath, null,
                            $"not a readable tar archive (after {entries.Count} entries): {e.Message}", e);
                    }

                    if (entry is null)
                    {
                        break;
                    }

                    var name = NormalizeName(entry.Name);
                    if (name.Length == 0)
                    {
                        continue;
                    }

                    var item = new TarItem(name, entry.EntryType, entry.DataOffset, entry.Length, entry.LinkName);
                    if (item.Type is TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile
                        && item.Offset + item.Length > fileLength)
                    {
                        throw new ImageArchiveException(ArchiveProblem.Truncated, displayPath, DigestOfBlobPath(name),
                            $"the archive is truncated: entry {name} needs {item.Length} bytes at offset {item.Offset}, but the file has {fileLength} bytes");
                    }

                    entries[name] = item; // a later entry of the same name wins, as on extraction
                }
            }
        }

        if (entries.Count == 0)
        {
            throw new ImageArchiveException(ArchiveProblem.InvalidFormat, displayPath, null, "the tar archive is empty");
        }

        return entries;
    }

    private static string NormalizeName(string name)
    {
        var parts = new List<string>();
        foreach (var part in name.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == ".")
            {
                continue;
            }

            if (part == "..")
            {
                if (parts.Count > 0)
                {
                    parts.RemoveAt(parts.Count - 1);
                }

                continue;
            }

            parts.Add(part);
        }

        return string.Join('/', parts);
    }

    private static string? DigestOfBlobPath(string name)
        => name.StartsWith("blobs/sha256/", StringComparison.Ordinal) && OciDigest.IsValid("sha256:" + name["blobs/sha256/".Length..])
            ? "sha256:" + name["blobs/sha256/".Length..]
            : null;

    /// <summary>Finds a regular-file entry, following symlinks and hard links inside the archive.</summary>
    private TarItem? FindFile(string name)
    {
        name = NormalizeName(name);
        for (var hop = 0; hop < 16; hop++)
        {
            if (!_entries.TryGetValue(name, out var item))
            {
                return null;
            }

            switch (item.Type)
            {
                case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                    return item;
                case TarEntryType.HardLink when item.LinkName is not null:
                    name = NormalizeName(item.LinkName);
                    break;
                case TarEntryType.SymbolicLink when item.LinkName is not null:
                    var dir = name.Contains('/', StringComparison.Ordinal) ? name[..name.LastIndexOf('/')] : "";
                    name = NormalizeName(item.LinkName.StartsWith('/') ? item.LinkName : dir + "/" + item.LinkName);
                    break;
                default:
                    return null;
            }
        }

        throw new ImageArchiveException(ArchiveProblem.InvalidFormat, Path, null, $"too many links resolving {name}");
    }

    private async Task<byte[]> ReadEntryAsync(TarItem item, CancellationToken cancellationToken)
    {
        if (item.Length > _options.MaxJsonBlobSize)
        {
            throw new ImageArchiveException(ArchiveProblem.Unsupported, Path, DigestOfBlobPath(item.Name),
                $"{item.Name} is {item.Length} bytes, more than the {_options.MaxJsonBlobSize} allowed for a JSON document");
        }

        var data = new byte[item.Length];
        var stream = new FileSegmentStream(_tarPath, item.Offset, item.Length);
        await using var streamDisposal = stream.ConfigureAwait(false);
        await stream.ReadExactlyAsync(data, cancellationToken).ConfigureAwait(false);
        return data;
    }
}
