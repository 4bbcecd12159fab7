using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;

namespace KataAgent.Api.Server;

/// <summary>
/// Reports progress lines on a server stream. <see cref="IProgress{T}.Report"/> is synchronous and may be called
/// from any thread, while a gRPC stream takes one write at a time: lines go through a queue and one pump writes them.
/// </summary>
internal sealed class StreamProgress<T>(IServerStreamWriter<T> stream, Func<string, T> wrap) : StreamProgress<T, string>(stream, wrap);

/// <inheritdoc cref="StreamProgress{T}"/>
internal class StreamProgress<T, TItem> : IProgress<TItem>
{
    private readonly Channel<TItem> _lines = Channel.CreateUnbounded<TItem>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _pump;

    public StreamProgress(IServerStreamWriter<T> stream, Func<TItem, T> wrap)
    {
        _pump = Task.Run(async () =>
        {
            await foreach (var line in _lines.Reader.ReadAllAsync())
            {
                try
                {
                    await stream.WriteAsync(wrap(line));
                }
                catch (InvalidOperationException)
                {
                    return; // the call ended; progress is best effort
                }
            }
        });
    }

    public void Report(TItem value) => _lines.Writer.TryWrite(value);

    /// <summary>Waits until every reported line is written; call before writing anything else on the stream.</summary>
    public Task FlushAsync()
    {
        _lines.Writer.TryComplete();
        return _pump;
    }
}

/// <summary>A read-only stream over the byte chunks of a client stream.</summary>
internal sealed class ChunkStream<T>(IAsyncStreamReader<T> reader, Func<T, ByteString?> chunkOf, CancellationToken callToken) : Stream
{
    private ReadOnlyMemory<byte> _current = ReadOnlyMemory<byte>.Empty;
    private bool _ended;

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, callToken);
        while (_current.IsEmpty && !_ended)
        {
            if (!await reader.MoveNext(linked.Token))
            {
                _ended = true;
                break;
            }
            _current = (chunkOf(reader.Current) ?? throw new ArgumentException("after the header, only chunks may follow")).Memory;
        }
        if (_current.IsEmpty)
            return 0;
        var n = Math.Min(buffer.Length, _current.Length);
        _current[..n].CopyTo(buffer);
        _current = _current[n..];
        return n;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("read asynchronously");
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

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
