using System.IO.Compression;

namespace KataAgent.Images;

/// <summary>An image, or a compressed archive, expands to more than its cap: refused before the expansion reaches the disk.</summary>
public sealed class ExpansionLimitException(string message) : Exception(message);

/// <summary>
/// Caps how far compressed image data may expand: a gzip or zstd bomb (a small archive, a huge expansion) must not fill
/// the disk that containerd, the sessions and the agent share. Layers are measured by decompressing them into nothing
/// before anything is written (containerd's diff service expands them with no limit of its own); a compressed archive is
/// cut off while it is decompressed to its temp file.
/// </summary>
public static class ExpansionLimit
{
    private const int BufferSize = 1 << 16;

    /// <summary>
    /// Decompresses each layer (as its media type says) and counts the bytes; throws <see cref="ExpansionLimitException"/>
    /// as soon as the sum passes <paramref name="maxBytes"/>. Returns the sum.
    /// </summary>
    /// <param name="open">opens a layer's compressed bytes</param>
    /// <param name="what">names the image in the error, e.g. "importing NAME"</param>
    public static async Task<long> CheckLayersAsync(IReadOnlyList<OciDescriptor> layers, Func<OciDescriptor, CancellationToken, Task<Stream>> open,
        long maxBytes, string what, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBytes);
        var total = 0L;
        var buffer = new byte[BufferSize];
        for (var i = 0; i < layers.Count; i++)
        {
            var layer = layers[i];
            MediaTypes.TryGetLayerCompression(layer.MediaType, out var compression);
            var raw = await open(layer, cancellationToken).ConfigureAwait(false);
            await using (raw.ConfigureAwait(false))
            {
                var expanded = Decompressing(raw, compression);
                await using (expanded.ConfigureAwait(false))
                {
                    int n;
                    while ((n = await expanded.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                    {
                        total += n;
                        if (total > maxBytes)
                        {
                            throw new ExpansionLimitException(
                                $"{what}: the layers expand to more than {maxBytes} bytes (the cap, images.max_expanded; passed in layer {i}, " +
                                $"{layer.Digest}, {layer.Size} bytes compressed): refused before unpacking");
                        }
                    }
                }
            }
        }
        return total;
    }

    /// <summary>Copies <paramref name="source"/> to <paramref name="destination"/>, throwing once more than <paramref name="maxBytes"/> went through.</summary>
    public static async Task CopyAsync(Stream source, Stream destination, long maxBytes, string what, CancellationToken cancellationToken)
    {
        var buffer = new byte[BufferSize];
        var total = 0L;
        int n;
        while ((n = await source.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
        {
            total += n;
            if (total > maxBytes)
                throw new ExpansionLimitException($"{what}: expands to more than {maxBytes} bytes (the cap, images.max_expanded): refused");
            await destination.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
        }
    }

    private static Stream Decompressing(Stream raw, LayerCompression compression) => compression switch
    {
        LayerCompression.Gzip => new GZipStream(raw, CompressionMode.Decompress, leaveOpen: true),
        LayerCompression.Zstd => new ZstdSharp.DecompressionStream(raw, leaveOpen: true),
        _ => new NonClosing(raw),
    };

    // The caller disposes the raw stream itself.
    private sealed class NonClosing(Stream inner) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => inner.ReadAsync(buffer, cancellationToken);
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
