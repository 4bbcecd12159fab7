using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;

namespace KataAgent.Images.Registry;

/// <summary>
/// The source <see cref="KataAgent.Containerd.Services.ContentService.WriteAsync"/> reads a downloaded blob from. It
/// presents the whole blob (logical position 0, <see cref="Length"/> = blob size) although the download may start
/// later (a Range request resuming an ingest): the content service seeks to its ingest offset, which must be at or after
/// the download's start (bytes in between are read and dropped). It never yields more than the blob's size, fails when
/// the connection ends early (resumable), fails when no byte comes for the stall timeout, and, when it has seen every
/// byte from 0, fails with <see cref="BlobDigestMismatchException"/> before the content service can commit bad bytes.
/// </summary>
internal sealed class DownloadStream : Stream
{
    private const int MinRead = 1024 * 1024;
    [SuppressMessage("Reliability", "CA2213:Disposable fields should be disposed", Justification = "Not owned: the caller's blob download owns and disposes the connection's stream.")]
    private readonly Stream _inner;
    private readonly long _start;
    private readonly long _size;
    private readonly string _digest;
    private readonly string _registry;
    private readonly TimeSpan _stallTimeout;
    private readonly Action<long> _onPosition;
    private readonly IncrementalHash? _hash;
    private long _position;
    private long _skipTo;
    private bool _seeked;
    private bool _verified;

    /// <param name="start">the blob offset the inner stream starts at</param>
    /// <param name="onPosition">told the blob offset reached (for progress)</param>
    public DownloadStream(Stream inner, long start, long size, string digest, string registry, TimeSpan stallTimeout, Action<long> onPosition)
    {
        _inner = inner;
        _start = start;
        _size = size;
        _digest = digest;
        _registry = registry;
        _stallTimeout = stallTimeout;
        _onPosition = onPosition;
        _hash = start == 0 ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
        _position = start;
        _skipTo = start;
    }

    /// <summary>Bytes that came over the network through this stream (skipped ones included).</summary>
    public long BytesReceived { get; private set; }

    /// <summary>Where the content service started writing (the ingest offset it resumed from).</summary>
    public long ResumedFrom { get; private set; }

    public override bool CanRead => true;
    public override bool CanSeek => true;
    public override bool CanWrite => false;
    public override long Length => _size;

    public override long Position
    {
        get => _seeked || _start == 0 ? Math.Max(_position, _skipTo) : 0;
        set => Seek(value, SeekOrigin.Begin);
    }

    public override long Seek(long offset, SeekOrigin origin)
    {
        var target = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => Position + offset,
            _ => _size + offset,
        };
        if (target < Math.Max(_position, _skipTo) || target > _size)
        {
            throw new IngestOffsetException($"blob {_digest}: the content store resumes at byte {target}, but the download is at byte {Math.Max(_position, _skipTo)}");
        }

        // bytes between the download's position and the ingest offset are read (and hashed) when the next read needs them
        _skipTo = target;
        _seeked = true;
        ResumedFrom = target;
        return target;
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("read asynchronously");

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (!_seeked && _start > 0)
        {
            throw new IngestOffsetException($"blob {_digest}: the content store starts at byte 0, but the download starts at byte {_start}");
        }

        while (_position < _skipTo)
        {
            var scratch = new byte[(int)Math.Min(64 * 1024, _skipTo - _position)];
            var skipped = await ReadInnerAsync(scratch, cancellationToken).ConfigureAwait(false);
            _position += skipped;
        }

        if (_position >= _size)
        {
            Verify();
            return 0;
        }

        var want = (int)Math.Min(buffer.Length, _size - _position);
        var filled = 0;
        // gather up to MinRead bytes (or the rest of the blob) so the content service sends fewer, larger messages
        while (filled < Math.Min(want, MinRead))
        {
            var read = await ReadInnerAsync(buffer[filled..want], cancellationToken).ConfigureAwait(false);
            _position += read;
            filled += read;
        }

        _onPosition(_position);
        return filled;
    }

    private async Task<int> ReadInnerAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        int read;
        using (var stall = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
        {
            stall.CancelAfter(_stallTimeout);
            try
            {
                read = await _inner.ReadAsync(buffer, stall.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
            {
                throw new RegistryUnavailableException(_registry, $"blob {_digest}: no data from registry {_registry} for {_stallTimeout.TotalSeconds:0} s at byte {_position} of {_size}", null, e);
            }
            catch (Exception e) when (e is IOException or HttpRequestException)
            {
                throw new RegistryUnavailableException(_registry, $"blob {_digest}: the download from {_registry} broke off at byte {_position} of {_size}: {e.Message}", null, e);
            }
        }

        if (read == 0)
        {
            throw new RegistryUnavailableException(_registry, $"blob {_digest}: registry {_registry} ended the download at byte {_position} of {_size}");
        }

        BytesReceived += read;
        _hash?.AppendData(buffer.Span[..read]);
        return read;
    }

    private void Verify()
    {
        if (_hash is null || _verified)
        {
            return; // resumed: containerd checks the digest of the whole ingest on commit
        }

        _verified = true;
        var actual = OciDigest.FromHash(_hash.GetHashAndReset());
        if (actual != _digest)
        {
            throw new BlobDigestMismatchException(_registry, _digest,
                $"blob {_digest} ({_size} bytes) from registry {_registry} is corrupt: its bytes hash to {actual}");
        }
    }

    public override void Flush()
    {
    }

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _hash?.Dispose();
        }

        base.Dispose(disposing);
    }
}

/// <summary>The content store's ingest offset and the download disagree; the fetch starts over with fresh status.</summary>
internal sealed class IngestOffsetException(string message) : IOException(message);
