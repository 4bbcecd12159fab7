namespace KataAgent.Images.Registry;

/// <summary>Thread-safe bookkeeping behind the progress events: totals, and throttled per-blob reports.</summary>
internal sealed class ProgressBook(long totalBytes, Action<BlobProgress?, long> report)
{
    private const long ReportEvery = 512 * 1024;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, (long Transferred, long Reported, BlobState State)> _blobs = [];
    private long _completed;

    public long TotalBytes { get; } = totalBytes;

    public void Phase() => report(null, Interlocked.Read(ref _completed));

    /// <summary>Sets a blob's state and bytes; reports state changes always and byte growth every 512 KiB.</summary>
    public void Update(OciDescriptor blob, long transferred, BlobState state)
    {
        long completed;
        lock (_lock)
        {
            var known = _blobs.TryGetValue(blob.Digest, out var previous);
            _completed += transferred - previous.Transferred;
            completed = _completed;
            var due = !known || state != previous.State || transferred - previous.Reported >= ReportEvery || transferred == blob.Size;
            _blobs[blob.Digest] = (transferred, due ? transferred : previous.Reported, state);
            if (!due)
            {
                return;
            }
        }

        report(new BlobProgress(blob.Digest, blob.MediaType, blob.Size, transferred, state), completed);
    }
}
