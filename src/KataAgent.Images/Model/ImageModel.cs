using System.Text.Json;
using System.Text.Json.Serialization;
using KataAgent.Oci;

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

[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, PropertyNameCaseInsensitive = false)]
[JsonSerializable(typeof(OciDescriptor))]
[JsonSerializable(typeof(OciManifest))]
[JsonSerializable(typeof(OciIndex))]
[JsonSerializable(typeof(List<DockerSaveEntry>))]
[JsonSerializable(typeof(OciLayoutMarker))]
internal sealed partial class ImageJsonContext : JsonSerializerContext;

/// <summary>Serialization of the image model: compact, deterministic (property order fixed by the types, dictionaries sorted).</summary>
public static class ImageJson
{
    public static byte[] Serialize(OciManifest manifest) => JsonSerializer.SerializeToUtf8Bytes(Sorted(manifest), ImageJsonContext.Default.OciManifest);

    public static byte[] Serialize(OciIndex index) => JsonSerializer.SerializeToUtf8Bytes(Sorted(index), ImageJsonContext.Default.OciIndex);

    /// <summary>The config as JSON bytes, labels in ordinal order (the Oci model owns the shape).</summary>
    public static byte[] Serialize(ImageConfig config)
    {
        if (config.Config?.Labels is { } labels)
        {
            config.Config.Labels = labels.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToDictionary(kv => kv.Key, kv => kv.Value);
        }

        return System.Text.Encoding.UTF8.GetBytes(config.ToJson());
    }

    public static OciManifest DeserializeManifest(ReadOnlySpan<byte> json) => Require(JsonSerializer.Deserialize(json, ImageJsonContext.Default.OciManifest), "manifest");

    public static OciIndex DeserializeIndex(ReadOnlySpan<byte> json) => Require(JsonSerializer.Deserialize(json, ImageJsonContext.Default.OciIndex), "index");

    public static ImageConfig DeserializeConfig(ReadOnlySpan<byte> json)
    {
        try
        {
            return ImageConfig.Parse(json);
        }
        catch (InvalidSpecException e)
        {
            throw new JsonException(e.Message, e);
        }
    }

    internal static List<DockerSaveEntry> DeserializeDockerSave(ReadOnlySpan<byte> json) => Require(JsonSerializer.Deserialize(json, ImageJsonContext.Default.ListDockerSaveEntry), "docker manifest.json");

    internal static OciLayoutMarker DeserializeLayoutMarker(ReadOnlySpan<byte> json) => Require(JsonSerializer.Deserialize(json, ImageJsonContext.Default.OciLayoutMarker), "oci-layout");

    internal static byte[] Serialize(OciLayoutMarker marker) => JsonSerializer.SerializeToUtf8Bytes(marker, ImageJsonContext.Default.OciLayoutMarker);

    private static T Require<T>(T? value, string what) where T : class
        => value ?? throw new JsonException($"{what} is JSON null");

    private static SortedDictionary<string, string>? Sort(IReadOnlyDictionary<string, string>? d)
        => d is null ? null : new SortedDictionary<string, string>(d.ToDictionary(), StringComparer.Ordinal);

    private static OciDescriptor Sorted(OciDescriptor d) => d with { Annotations = Sort(d.Annotations) };

    private static OciManifest Sorted(OciManifest m) => m with
    {
        Config = Sorted(m.Config),
        Layers = m.Layers.Select(Sorted).ToList(),
        Annotations = Sort(m.Annotations),
    };

    private static OciIndex Sorted(OciIndex i) => i with { Manifests = i.Manifests.Select(Sorted).ToList(), Annotations = Sort(i.Annotations) };
}
