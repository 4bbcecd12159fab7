using System.Text.Json;
using System.Text.Json.Serialization;
using KataAgent.Oci;

namespace KataAgent.Images;

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
