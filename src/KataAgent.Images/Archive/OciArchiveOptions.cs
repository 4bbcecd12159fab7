namespace KataAgent.Images;

/// <summary>Options for <see cref="OciArchive.OpenAsync"/>.</summary>
public sealed record OciArchiveOptions
{
    /// <summary>Platform picked from multi-platform indexes. Default: the host's (linux/amd64 here).</summary>
    public OciPlatform Platform { get; init; } = OciPlatform.Host;

    /// <summary>Where a gzip/zstd-compressed archive is decompressed to before reading. Default: the system temp dir.</summary>
    public string? TempDirectory { get; init; }

    /// <summary>A compressed archive that decompresses to more than this is refused (and its temp file removed); null: no cap.</summary>
    public long? MaxDecompressedBytes { get; init; }

    /// <summary>Largest manifest, index or config blob read into memory.</summary>
    public long MaxJsonBlobSize { get; init; } = 16 * 1024 * 1024;
}
