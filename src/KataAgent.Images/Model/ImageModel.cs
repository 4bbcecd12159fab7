using System.Text.Json.Serialization;

namespace KataAgent.Images;

/// <summary>OCI platform of a manifest.</summary>
public sealed record OciPlatform
{
    [JsonPropertyName("architecture")] public required string Architecture { get; init; }
    [JsonPropertyName("os")] public required string OS { get; init; }
    [JsonPropertyName("variant")] public string? Variant { get; init; }

    public static OciPlatform LinuxAmd64 { get; } = new() { Architecture = "amd64", OS = "linux" };

    /// <summary>The platform of the running process (linux/amd64, linux/arm64, ...).</summary>
    public static OciPlatform Host { get; } = new()
    {
        OS = "linux",
        Architecture = System.Runtime.InteropServices.RuntimeInformation.OSArchitecture switch
        {
            System.Runtime.InteropServices.Architecture.X64 => "amd64",
            System.Runtime.InteropServices.Architecture.Arm64 => "arm64",
            System.Runtime.InteropServices.Architecture.X86 => "386",
            System.Runtime.InteropServices.Architecture.Arm => "arm",
            System.Runtime.InteropServices.Architecture.S390x => "s390x",
            System.Runtime.InteropServices.Architecture.Ppc64le => "ppc64le",
            System.Runtime.InteropServices.Architecture.RiscV64 => "riscv64",
            var other => other.ToString().ToLowerInvariant(),
        },
    };

    public override string ToString() => Variant is null ? $"{OS}/{Architecture}" : $"{OS}/{Architecture}/{Variant}";
}

/// <summary>OCI content descriptor.</summary>
public sealed record OciDescriptor
{
    [JsonPropertyName("mediaType")] public required string MediaType { get; init; }
    [JsonPropertyName("digest")] public required string Digest { get; init; }
    [JsonPropertyName("size")] public required long Size { get; init; }
    [JsonPropertyName("annotations")] public IReadOnlyDictionary<string, string>? Annotations { get; init; }
    [JsonPropertyName("platform")] public OciPlatform? Platform { get; init; }
}

/// <summary>OCI image manifest (also read for Docker schema 2 manifests, which share the shape).</summary>
public sealed record OciManifest
{
    [JsonPropertyName("schemaVersion")] public int SchemaVersion { get; init; } = 2;
    [JsonPropertyName("mediaType")] public string? MediaType { get; init; }
    [JsonPropertyName("config")] public required OciDescriptor Config { get; init; }
    [JsonPropertyName("layers")] public required IReadOnlyList<OciDescriptor> Layers { get; init; }
    [JsonPropertyName("annotations")] public IReadOnlyDictionary<string, string>? Annotations { get; init; }
}

/// <summary>OCI image index (also read for Docker manifest lists).</summary>
public sealed record OciIndex
{
    [JsonPropertyName("schemaVersion")] public int SchemaVersion { get; init; } = 2;
    [JsonPropertyName("mediaType")] public string? MediaType { get; init; }
    [JsonPropertyName("manifests")] public required IReadOnlyList<OciDescriptor> Manifests { get; init; }
    [JsonPropertyName("annotations")] public IReadOnlyDictionary<string, string>? Annotations { get; init; }
}

/// <summary>Docker <c>docker save</c> manifest.json entry.</summary>
internal sealed record DockerSaveEntry
{
    [JsonPropertyName("Config")] public required string Config { get; init; }
    [JsonPropertyName("RepoTags")] public IReadOnlyList<string>? RepoTags { get; init; }
    [JsonPropertyName("Layers")] public required IReadOnlyList<string> Layers { get; init; }
}

/// <summary>The <c>oci-layout</c> marker file.</summary>
internal sealed record OciLayoutMarker
{
    [JsonPropertyName("imageLayoutVersion")] public required string ImageLayoutVersion { get; init; }
}
