using KataAgent.Oci;

namespace KataAgent.Images;

/// <summary>Format of an image archive.</summary>
public enum ImageArchiveFormat
{
    /// <summary>OCI image layout (oci-layout, index.json, blobs/sha256/...).</summary>
    OciLayout,
    /// <summary><c>docker save</c> (manifest.json, &lt;id&gt;.json config, &lt;id&gt;/layer.tar); converted to an OCI manifest on read.</summary>
    DockerSave,
}

/// <summary>One image found in an archive, resolved to a single platform manifest.</summary>
public sealed record ArchiveImage
{
    /// <summary>Image names from the archive (<c>io.containerd.image.name</c> / <c>org.opencontainers.image.ref.name</c> annotations, or RepoTags); may be empty.</summary>
    public required IReadOnlyList<string> Names { get; init; }

    /// <summary>The first name, or null when the archive names none.</summary>
    public string? Name => Names.Count > 0 ? Names[0] : null;

    /// <summary>Descriptor of the platform manifest (for docker-save archives, of the OCI manifest synthesised from manifest.json).</summary>
    public required OciDescriptor ManifestDescriptor { get; init; }

    public required OciManifest Manifest { get; init; }

    public OciDescriptor ConfigDescriptor => Manifest.Config;

    public required ImageConfig Config { get; init; }

    public IReadOnlyList<OciDescriptor> Layers => Manifest.Layers;

    /// <summary>Index blobs crossed on the way from index.json to the manifest (outermost first); empty when index.json names the manifest directly.</summary>
    public required IReadOnlyList<OciDescriptor> Indexes { get; init; }

    /// <summary>The uncompressed layer digests from the config, bottom layer first.</summary>
    public IReadOnlyList<string> DiffIds => Config.Rootfs?.DiffIds ?? [];

    /// <summary>Manifest, config and layer descriptors: every blob the image needs.</summary>
    public IEnumerable<OciDescriptor> Blobs()
    {
        yield return ManifestDescriptor;
        yield return ConfigDescriptor;
        foreach (var layer in Layers)
        {
            yield return layer;
        }
    }
}
