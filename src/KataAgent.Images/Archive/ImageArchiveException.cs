namespace KataAgent.Images;

/// <summary>What is wrong with an image archive.</summary>
public enum ArchiveProblem
{
    /// <summary>Not a tar, or neither an OCI image layout nor a <c>docker save</c> archive, or malformed JSON.</summary>
    InvalidFormat,
    /// <summary>A blob referenced by an index or manifest is not in the archive.</summary>
    MissingBlob,
    /// <summary>A blob's size in the archive differs from the size its descriptor states.</summary>
    SizeMismatch,
    /// <summary>A blob's content does not hash to its digest.</summary>
    DigestMismatch,
    /// <summary>The archive file ends in the middle of a blob.</summary>
    Truncated,
    /// <summary>No manifest for the wanted platform.</summary>
    PlatformNotFound,
    /// <summary>Something the reader does not support (media type, digest algorithm).</summary>
    Unsupported,
}

/// <summary>An image archive is unreadable or corrupt. The message names the archive and, when known, the blob.</summary>
public sealed class ImageArchiveException : Exception
{
    public ImageArchiveException(ArchiveProblem problem, string archivePath, string? blobDigest, string message, Exception? innerException = null)
        : base($"image archive {archivePath}: {message}", innerException)
    {
        Problem = problem;
        ArchivePath = archivePath;
        BlobDigest = blobDigest;
    }

    public ArchiveProblem Problem { get; }

    public string ArchivePath { get; }

    /// <summary>The digest of the blob at fault, if the problem concerns one blob.</summary>
    public string? BlobDigest { get; }
}
