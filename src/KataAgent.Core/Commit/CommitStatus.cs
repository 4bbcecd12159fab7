namespace KataAgent.Core.Commit;

public enum CommitPhase
{
    /// <summary>No commit of this session has run.</summary>
    Idle,
    /// <summary>Checking the request and the session's snapshot and image.</summary>
    Preparing,
    /// <summary>Freezing the session's task so its filesystem holds still.</summary>
    Pausing,
    /// <summary>Computing the layer: the session's snapshot against its image's top layer.</summary>
    Diffing,
    /// <summary>Unpacking the layer into a snapshot, writing config and manifest, registering the image.</summary>
    Writing,
    Done,
    Failed,
}

/// <summary>Where a session's (latest) commit is.</summary>
public sealed record CommitStatus(
    string KernelId,
    CommitPhase Phase,
    string? ImageName = null,
    DateTimeOffset? StartedAt = null,
    DateTimeOffset? FinishedAt = null,
    string? Error = null,
    CommittedImage? Result = null)
{
    public bool IsActive => Phase is CommitPhase.Preparing or CommitPhase.Pausing or CommitPhase.Diffing or CommitPhase.Writing;
}

/// <summary>What a commit registered.</summary>
/// <param name="Name">the image record's name</param>
/// <param name="ManifestDigest">the image record's target</param>
/// <param name="ConfigDigest">the new image config</param>
/// <param name="LayerDigest">the new layer (gzip) in the content store</param>
/// <param name="LayerSize">its compressed size</param>
/// <param name="DiffId">its uncompressed digest (the last of the config's rootfs.diff_ids)</param>
/// <param name="ChainId">the committed snapshot new sessions start from</param>
/// <param name="BaseImage">the image the session was started from</param>
/// <param name="PausedFor">how long the session's task was frozen (zero when it was not running)</param>
public sealed record CommittedImage(
    string Name,
    string ManifestDigest,
    string ConfigDigest,
    string LayerDigest,
    long LayerSize,
    string DiffId,
    string ChainId,
    string BaseImage,
    bool Replaced,
    TimeSpan PausedFor,
    TimeSpan Elapsed);

/// <summary>A commit failed; nothing was registered and the session was resumed.</summary>
public class ImageCommitException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>The target name is taken and replacing was not asked for.</summary>
public sealed class ImageExistsException(string name)
    : ImageCommitException($"an image named '{name}' already exists: commit with replace=true to overwrite it, or choose another name")
{
    public string Name { get; } = name;
}

/// <summary>A commit of the session is already running.</summary>
public sealed class CommitInProgressException(string kernelId, string imageName)
    : ImageCommitException($"session {kernelId} is already being committed (to '{imageName}'); wait for it to finish")
{
    public string KernelId { get; } = kernelId;
}
