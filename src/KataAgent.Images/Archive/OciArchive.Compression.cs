using System.IO.Compression;

namespace KataAgent.Images;

// Whole-archive compression: sniffed from the magic bytes and decompressed to a temp tar before indexing.
public sealed partial class OciArchive
{
    internal static LayerCompression SniffCompression(ReadOnlySpan<byte> magic)
    {
        if (magic.Length >= 2 && magic[0] == 0x1f && magic[1] == 0x8b)
        {
            return LayerCompression.Gzip;
        }

        if (magic.Length >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd)
        {
            return LayerCompression.Zstd;
        }

        return LayerCompression.None;
    }

    private static async Task<LayerCompression> DetectCompressionAsync(string path, CancellationToken cancellationToken)
    {
        var magic = new byte[4];
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.Asynchronous);
        await using (stream.ConfigureAwait(false))
        {
            var n = await stream.ReadAtLeastAsync(magic, magic.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
            return SniffCompression(magic.AsSpan(0, n));
        }
    }

    private static async Task<string> DecompressToTempAsync(string path, LayerCompression compression, OciArchiveOptions options, CancellationToken cancellationToken)
    {
        var dir = options.TempDirectory ?? System.IO.Path.GetTempPath();
        Directory.CreateDirectory(dir);
        var temp = System.IO.Path.Combine(dir, $"kata-agent-archive-{Guid.NewGuid():N}.tar");
        try
        {
            var input = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous);
            await using (input.ConfigureAwait(false))
            {
                Stream decompressed = compression == LayerCompression.Gzip
                    ? new GZipStream(input, CompressionMode.Decompress, leaveOpen: true)
                    : new ZstdSharp.DecompressionStream(input, leaveOpen: true);
                await using (decompressed.ConfigureAwait(false))
                {
                    var output = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
                    await using (output.ConfigureAwait(false))
                    {
                        if (options.MaxDecompressedBytes is { } max)
                            await ExpansionLimit.CopyAsync(decompressed, output, max, $"the {compression}-compressed archive {path}", cancellationToken).ConfigureAwait(false);
                        else
                            await decompressed.CopyToAsync(output, cancellationToken).ConfigureAwait(false);
                    }
                }
            }

            return temp;
        }
        catch (Exception e) when (e is InvalidDataException or ZstdSharp.ZstdException or EndOfStreamException)
        {
            TryDelete(temp);
            throw new ImageArchiveException(ArchiveProblem.Truncated, path, null, $"the {compression}-compressed archive cannot be decompressed: {e.Message}", e);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }
}
