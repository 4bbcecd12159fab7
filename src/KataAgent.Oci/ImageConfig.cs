using System.Text.Json;
using System.Text.Json.Serialization;

namespace KataAgent.Oci;

// OCI image-spec config (application/vnd.oci.image.config.v1+json, same shape as Docker's).
// Field names are the image spec's own mixed spelling, hence the explicit JSON names.

/// <summary>An image's configuration blob.</summary>
public sealed class ImageConfig
{
    [JsonPropertyName("created")] public DateTimeOffset? Created { get; set; }
    [JsonPropertyName("author")] public string? Author { get; set; }
    [JsonPropertyName("architecture")] public string? Architecture { get; set; }
    [JsonPropertyName("os")] public string? Os { get; set; }
    [JsonPropertyName("variant")] public string? Variant { get; set; }
    [JsonPropertyName("config")] public ImageRuntimeConfig? Config { get; set; }
    [JsonPropertyName("rootfs")] public ImageRootfs? Rootfs { get; set; }
    [JsonPropertyName("history")] public List<ImageHistory>? History { get; set; }

    /// <summary>The image's labels (never copied into the runtime spec; the caller decides what to do with them).</summary>
    [JsonIgnore]
    public IReadOnlyDictionary<string, string> Labels =>
        (IReadOnlyDictionary<string, string>?)Config?.Labels ?? new Dictionary<string, string>();

    public static ImageConfig Parse(string json) =>
        JsonSerializer.Deserialize(json, ImageJsonContext.Default.ImageConfig)
        ?? throw new InvalidSpecException("image config JSON is null");

    public static ImageConfig Parse(ReadOnlySpan<byte> utf8Json) =>
        JsonSerializer.Deserialize(utf8Json, ImageJsonContext.Default.ImageConfig)
        ?? throw new InvalidSpecException("image config JSON is null");

    public string ToJson() => JsonSerializer.Serialize(this, ImageJsonContext.Default.ImageConfig);
}

/// <summary>The "config" object: how to run the image.</summary>
public sealed class ImageRuntimeConfig
{
    [JsonPropertyName("User")] public string? User { get; set; }
    [JsonPropertyName("Env")] public List<string>? Env { get; set; }
    [JsonPropertyName("Entrypoint")] public List<string>? Entrypoint { get; set; }
    [JsonPropertyName("Cmd")] public List<string>? Cmd { get; set; }
    [JsonPropertyName("WorkingDir")] public string? WorkingDir { get; set; }
    [JsonPropertyName("Labels")] public Dictionary<string, string>? Labels { get; set; }
    /// <summary>Keys like "8080/tcp"; the values are empty objects in every image seen.</summary>
    [JsonPropertyName("ExposedPorts")] public Dictionary<string, JsonElement>? ExposedPorts { get; set; }
    [JsonPropertyName("StopSignal")] public string? StopSignal { get; set; }
}

public sealed class ImageRootfs
{
    [JsonPropertyName("type")] public string Type { get; set; } = "layers";
    [JsonPropertyName("diff_ids")] public List<string> DiffIds { get; set; } = [];
}

public sealed class ImageHistory
{
    [JsonPropertyName("created")] public DateTimeOffset? Created { get; set; }
    [JsonPropertyName("created_by")] public string? CreatedBy { get; set; }
    [JsonPropertyName("author")] public string? Author { get; set; }
    [JsonPropertyName("comment")] public string? Comment { get; set; }
    [JsonPropertyName("empty_layer")] public bool? EmptyLayer { get; set; }
}

[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(ImageConfig))]
internal sealed partial class ImageJsonContext : JsonSerializerContext;
