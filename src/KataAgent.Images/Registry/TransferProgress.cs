namespace KataAgent.Images.Registry;

/// <summary>Where one blob of a pull or push is.</summary>
public enum BlobState
{
    /// <summary>Known, not started (waiting for a transfer slot).</summary>
    Waiting,
    /// <summary>Already at the destination (content store or registry): nothing to transfer.</summary>
    Present,
    /// <summary>Bytes are moving; <see cref="BlobProgress.Transferred"/> grows.</summary>
    Transferring,
    /// <summary>Transferred and verified.</summary>
    Done,
    /// <summary>Pull only: the layer is being unpacked into a snapshot.</summary>
    Unpacking,
    /// <summary>Pull only: the layer's snapshot is committed.</summary>
    Unpacked,
}

/// <summary>Progress of one blob: a progress bar's worth. <see cref="Transferred"/> counts bytes at the destination (a resumed
/// download starts at what was already stored).</summary>
public sealed record BlobProgress(string Digest, string MediaType, long Size, long Transferred, BlobState State);

public enum PullPhase
{
    /// <summary>Asking the registry (or a mirror) for the manifest.</summary>
    Resolving,
    /// <summary>Blobs are downloading into the content store.</summary>
    Fetching,
    /// <summary>Layers are unpacking into snapshots.</summary>
    Unpacking,
    /// <summary>The image record is written; <see cref="PullProgress.Blob"/> is null.</summary>
    Done,
}

/// <summary>A pull progress event: the blob that changed (null for phase changes) and the totals over all blobs.</summary>
/// <param name="Image">the image name being pulled</param>
/// <param name="CompletedBytes">bytes of all blobs now in the content store (present ones count in full)</param>
/// <param name="TotalBytes">bytes of all blobs of the image (config and layers), 0 until resolved</param>
public sealed record PullProgress(string Image, PullPhase Phase, BlobProgress? Blob, long CompletedBytes, long TotalBytes);

public enum PushPhase
{
    /// <summary>Reading the local image and checking which blobs the registry has.</summary>
    Preparing,
    /// <summary>Blobs are uploading.</summary>
    Uploading,
    /// <summary>Manifests (and the index) are being put.</summary>
    Manifests,
    Done,
}

/// <summary>A push progress event: the blob that changed (null for phase changes) and the totals over all blobs.</summary>
public sealed record PushProgress(string Image, PushPhase Phase, BlobProgress? Blob, long CompletedBytes, long TotalBytes);
