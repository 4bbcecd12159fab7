using Google.Protobuf;
using Grpc.Core;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

/// <summary>
/// The chunks of a download call as a read-only stream, pulled as the reader asks (gRPC's flow control
/// then holds the agent back): at most one chunk is in memory. Async reads only.
/// </summary>
internal sealed class DownloadChunkStream(IAsyncStreamReader<DownloadReply> replies) : Stream
{
    private ReadOnlyMemory<byte> _current = ReadOnlyMemory<byte>.Empty;
    private bool _ended;

    public long BytesRead { get; private set; }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => BytesRead;
        set => throw new NotSupportedException();
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (_current.IsEmpty)
        {
            if (_ended || !await replies.MoveNext(cancellationToken))
            {
                _ended = true;
                return 0;
            }
            if (replies.Current.KindCase != DownloadReply.KindOneofCase.Chunk)
                throw new InvalidDataException("the agent sent a second download header in the middle of the data");
            ByteString chunk = replies.Current.Chunk;
            _current = chunk.Memory;
        }
        var n = Math.Min(buffer.Length, _current.Length);
        _current.Span[..n].CopyTo(buffer.Span);
        _current = _current[n..];
        BytesRead += n;
        return n;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    // Synchronous reads would block on the network; every consumer here reads asynchronously.
    public override int Read(byte[] buffer, int offset, int count) =>
        throw new NotSupportedException("read a download asynchronously");

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
