using Google.Protobuf;
using Grpc.Core;

namespace KataAgent.Api.Server;

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
