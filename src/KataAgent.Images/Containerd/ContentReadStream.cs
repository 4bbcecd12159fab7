using System.IO.Pipelines;
using KataAgent.Containerd;

namespace KataAgent.Images;

/// <summary>
/// A blob of containerd's content store as a readable stream (its Read call pushes chunks; this turns them into reads).
/// Disposing it early cancels the read, so a reader that stops half-way costs nothing more.
/// </summary>
internal sealed class ContentReadStream : Stream
{
    private readonly CancellationTokenSource _cancel;
    private readonly Pipe _pipe = new();
    private readonly Stream _reader;
    private readonly Task _producer;

    private ContentReadStream(ContainerdClient client, string digest, CancellationToken cancellationToken)
    {
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _reader = _pipe.Reader.AsStream();
        _producer = ProduceAsync(client, digest, _cancel.Token);
    }

    public static Stream Open(ContainerdClient client, string digest, CancellationToken cancellationToken) => new ContentReadStream(client, digest, cancellationToken);

    private async Task ProduceAsync(ContainerdClient client, string digest, CancellationToken cancellationToken)
    {
        await Task.Yield();
        try
        {
            await client.Content.ReadAsync(digest, _pipe.Writer.AsStream(leaveOpen: true), cancellationToken: cancellationToken).ConfigureAwait(false);
            await _pipe.Writer.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            await _pipe.Writer.CompleteAsync(e).ConfigureAwait(false);
        }
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("read asynchronously");
    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => _reader.ReadAsync(buffer, cancellationToken);
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        _reader.ReadAsync(buffer, offset, count, cancellationToken);
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override async ValueTask DisposeAsync()
    {
        await _cancel.CancelAsync().ConfigureAwait(false);
        await _reader.DisposeAsync().ConfigureAwait(false);
        await _producer.ConfigureAwait(false); // never throws: failures go into the pipe
        _cancel.Dispose();
        await base.DisposeAsync().ConfigureAwait(false);
    }
}
