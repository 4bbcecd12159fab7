using KataAgent.Oci;

namespace KataAgent.Images;

/// <summary>An image archive produced (or found in the cache) by <see cref="BaseImageBuilder"/>.</summary>
/// <param name="ArchivePath">the OCI layout tar</param>
/// <param name="Name">the image name in the archive's index.json</param>
/// <param name="Manifest">descriptor of the image manifest</param>
/// <param name="Config">the image config</param>
/// <param name="Layers">layer descriptors</param>
/// <param name="ArchiveSize">bytes of the archive file</param>
/// <param name="FromCache">true when the archive was already in the cache</param>
/// <param name="Elapsed">time the call took</param>
public sealed record BuiltImage(
    string ArchivePath,
    string Name,
    OciDescriptor Manifest,
    ImageConfig Config,
    IReadOnlyList<OciDescriptor> Layers,
    long ArchiveSize,
    bool FromCache,
    TimeSpan Elapsed);
