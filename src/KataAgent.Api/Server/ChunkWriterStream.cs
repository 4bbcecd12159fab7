using Google.Protobuf;

namespace KataAgent.Api.Server;

/// <summary>A write-only stream that sends what is written as chunks of at most a given size.</summary>
internal sealed class ChunkWriterStream(Func<ByteString, Task> send, int chunkSize) : Stream
{
    private readonly MemoryStream _pending = new();

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        _pending.Write(buffer.Span);
        if (_pending.Length >= chunkSize)
            await SendPendingAsync();
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async Task FlushAsync(CancellationToken cancellationToken)
    {
        if (_pending.Length > 0)
            await SendPendingAsync();
    }

    private async Task SendPendingAsync()
    {
        var data = _pending.GetBuffer().AsMemory(0, (int)_pending.Length);
        for (var offset = 0; offset < data.Length; offset += chunkSize)
            await send(ByteString.CopyFrom(data.Span.Slice(offset, Math.Min(chunkSize, data.Length - offset))));
        _pending.SetLength(0);
    }

    // TarWriter writes synchronously in places; buffer those writes and send them on the next async call.
    public override void Write(byte[] buffer, int offset, int count) => _pending.Write(buffer, offset, count);
    public override void Flush() { }
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _pending.Dispose();
        base.Dispose(disposing);
    }
}
