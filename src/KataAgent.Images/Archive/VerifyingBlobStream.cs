using System.Security.Cryptography;

namespace KataAgent.Images;

/// <summary>
/// Read-only stream over one blob that hashes what it returns and, on reaching the blob's end, throws
/// <see cref="ImageArchiveException"/> unless exactly the expected number of bytes hashed to the expected digest.
/// A consumer therefore never sees a clean end-of-stream for corrupt or truncated content.
/// </summary>
internal sealed class VerifyingBlobStream : Stream
{
    private readonly Stream _inner;
    private readonly long _length;
    private readonly string _expectedDigest;
    private readonly long _expectedSize;
    private readonly string _archivePath;
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private long _position;
    private bool _verified;

    /// <param name="inner">positioned at the blob's first byte; disposed with this stream</param>
    /// <param name="length">bytes the archive holds for the blob</param>
    public VerifyingBlobStream(Stream inner, long length, string expectedDigest, long expectedSize, string archivePath)
    {
        _inner = inner;
        _length = length;
        _expectedDigest = expectedDigest;
        _expectedSize = expectedSize;
        _archivePath = archivePath;
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => _position; set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        if (buffer.IsEmpty)
        {
            return 0;
        }

        var want = (int)Math.Min(buffer.Length, _length - _position);
        if (want == 0)
        {
            Verify();
            return 0;
        }

        var n = _inner.Read(buffer[..want]);
        return Account(buffer[..n]);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (buffer.IsEmpty)
        {
            return 0;
        }

        var want = (int)Math.Min(buffer.Length, _length - _position);
        if (want == 0)
        {
            Verify();
            return 0;
        }

        var n = await _inner.ReadAsync(buffer[..want], cancellationToken).ConfigureAwait(false);
        return Account(buffer.Span[..n]);
    }

    private int Account(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
        {
            throw new ImageArchiveException(ArchiveProblem.Truncated, _archivePath, _expectedDigest,
                $"blob {_expectedDigest} is truncated: the archive file ends after {_position} of its {_length} bytes");
        }

        _hash.AppendData(data);
        _position += data.Length;
        if (_position == _length)
        {
            Verify();
        }

        return data.Length;
    }

    private void Verify()
    {
        if (_verified)
        {
            return;
        }

        _verified = true;
        if (_position != _expectedSize)
        {
            throw new ImageArchiveException(ArchiveProblem.SizeMismatch, _archivePath, _expectedDigest,
                $"blob {_expectedDigest} has {_position} bytes but its descriptor says {_expectedSize}");
        }

        var actual = OciDigest.FromHash(_hash.GetCurrentHash());
        if (actual != _expectedDigest)
        {
            throw new ImageArchiveException(ArchiveProblem.DigestMismatch, _archivePath, _expectedDigest,
                $"blob {_expectedDigest} is corrupt: its content hashes to {actual}");
        }
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _inner.Dispose();
            _hash.Dispose();
        }

        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        await _inner.DisposeAsync().ConfigureAwait(false);
        _hash.Dispose();
        await base.DisposeAsync().ConfigureAwait(false);
    }
}

/// <summary>A read-only window [offset, offset+length) of a file; reads stop at the window's end or the file's.</summary>
internal sealed class FileSegmentStream : Stream
{
    private readonly FileStream _file;
    private readonly long _end;

    public FileSegmentStream(string path, long offset, long length)
    {
        _file = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.Open,
            Access = FileAccess.Read,
            Share = FileShare.Read,
            Options = FileOptions.Asynchronous | FileOptions.SequentialScan,
            BufferSize = 0,
        });
        _file.Position = offset;
        _end = offset + length;
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        var want = (int)Math.Min(buffer.Length, Math.Max(0, _end - _file.Position));
        return want == 0 ? 0 : _file.Read(buffer[..want]);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var want = (int)Math.Min(buffer.Length, Math.Max(0, _end - _file.Position));
        return want == 0 ? 0 : await _file.ReadAsync(buffer[..want], cancellationToken).ConfigureAwait(false);
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _file.Dispose();
        }

        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        await _file.DisposeAsync().ConfigureAwait(false);
        await base.DisposeAsync().ConfigureAwait(false);
    }
}
