using Microsoft.Win32.SafeHandles;

namespace KataAgent.Core.Scratch;

/// <summary>
/// Reads exactly <see cref="Length"/> bytes of a file: cut short if the guest appends while we
/// archive, zero-padded if it truncates. A tar header announces the size before the data, so the
/// data must never disagree with it.
/// </summary>
internal sealed class FixedLengthStream(SafeFileHandle handle, long length) : Stream
{
    private long _position;

    public override bool CanRead => true;
    public override bool CanSeek => true;
    public override bool CanWrite => false;
    public override long Length => length;

    public override long Position
    {
        get => _position;
        set => Seek(value, SeekOrigin.Begin);
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        var want = (int)Math.Min(buffer.Length, length - _position);
        if (want <= 0)
            return 0;
        var n = RandomAccess.Read(handle, buffer[..want], _position);
        return Advance(buffer, want, n);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var want = (int)Math.Min(buffer.Length, length - _position);
        if (want <= 0)
            return 0;
        var n = await RandomAccess.ReadAsync(handle, buffer[..want], _position, cancellationToken).ConfigureAwait(false);
        return Advance(buffer.Span, want, n);
    }

    private int Advance(Span<byte> buffer, int want, int read)
    {
        if (read == 0)
        {
            // The file shrank: pad with zeros up to the announced length.
            buffer[..want].Clear();
            read = want;
        }
        _position += read;
        return read;
    }

    public override long Seek(long offset, SeekOrigin origin)
    {
        var target = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => _position + offset,
            _ => length + offset,
        };
        if (target < 0 || target > length)
            throw new ArgumentOutOfRangeException(nameof(offset));
        _position = target;
        return _position;
    }

    public override void Flush()
    {
    }

    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            handle.Dispose();
        base.Dispose(disposing);
    }
}
