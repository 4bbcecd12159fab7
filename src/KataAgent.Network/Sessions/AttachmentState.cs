using System.Text.Json;
using System.Text.Json.Nodes;

namespace KataAgent.Network;

/// <summary>
/// The on-disk record of one attachment, like libcni's result cache: DEL must get the very config list,
/// runtime config and result of the ADD, even after an agent restart or a settings change.
/// </summary>
internal sealed class AttachmentState
{
    private const int FormatVersion = 1;
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public required string SessionId { get; init; }
    public required string NetnsName { get; init; }
    public required string NetnsPath { get; init; }
    public required string InterfaceName { get; init; }
    public required JsonObject ConfigList { get; init; }
    public required IReadOnlyList<PortMapping> PortMappings { get; init; }
    /// <summary>Latest result: a plugin's partial result during ADD, the final one after.</summary>
    public JsonObject? Result { get; set; }
    public bool Complete { get; set; }
    /// <summary>What the session may reach (kept so that a restart re-admits it with the same policy).</summary>
    public Isolation.EgressPolicy Egress { get; init; } = Isolation.EgressPolicy.Public;

    public CniRuntimeConfig RuntimeConfig => new(SessionId, NetnsPath, InterfaceName)
    {
        CapabilityArgs = new Dictionary<string, JsonNode?>
        {
            ["portMappings"] = new JsonArray(PortMappings.Select(p => (JsonNode)p.ToCniJson()).ToArray()),
        },
    };

    public byte[] Serialize() => JsonSerializer.SerializeToUtf8Bytes(new JsonObject
    {
        ["version"] = FormatVersion,
        ["sessionId"] = SessionId,
        ["netnsName"] = NetnsName,
        ["netnsPath"] = NetnsPath,
        ["interfaceName"] = InterfaceName,
        ["complete"] = Complete,
        ["egress"] = Egress.ToString().ToLowerInvariant(),
        ["configList"] = ConfigList.DeepClone(),
        ["portMappings"] = new JsonArray(PortMappings.Select(p => (JsonNode)p.ToCniJson()).ToArray()),
        ["result"] = Result?.DeepClone(),
    }, Indented);

    public static AttachmentState Deserialize(byte[] bytes, string path)
    {
        try
        {
            var json = JsonNode.Parse(bytes) as JsonObject ?? throw new FormatException("not a JSON object");
            int version = (int?)json["version"] ?? 0;
            if (version != FormatVersion)
                throw new FormatException($"unsupported state version {version}");
            return new AttachmentState
            {
                SessionId = Required(json, "sessionId"),
                NetnsName = Required(json, "netnsName"),
                NetnsPath = Required(json, "netnsPath"),
                InterfaceName = Required(json, "interfaceName"),
                Complete = (bool?)json["complete"] ?? false,
                ConfigList = json["configList"] as JsonObject ?? throw new FormatException("no configList"),
                PortMappings = (json["portMappings"] as JsonArray ?? []).OfType<JsonObject>().Select(PortMapping.FromCniJson).ToList(),
                Result = json["result"] as JsonObject,
                Egress = (string?)json["egress"] == "none" ? Isolation.EgressPolicy.None : Isolation.EgressPolicy.Public,
            };
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException or CniException)
        {
            throw new SessionNetworkException(Path.GetFileNameWithoutExtension(path), $"unreadable network state file {path}: {e.Message}", e);
        }
    }

    private static string Required(JsonObject json, string key) =>
        (string?)json[key] is { Length: > 0 } value ? value : throw new FormatException($"no {key}");
}
