using System.Text.Json.Nodes;

namespace KataAgent.Network;

/// <summary>
/// The per-attachment inputs of a CNI call: the environment variables, plus capability arguments
/// (e.g. "portMappings") that reach a plugin as runtimeConfig only if it declares that capability.
/// </summary>
public sealed record CniRuntimeConfig(string ContainerId, string NetnsPath, string InterfaceName)
{
    public IReadOnlyDictionary<string, JsonNode?> CapabilityArgs { get; init; } = new Dictionary<string, JsonNode?>();

    /// <summary>CNI_ARGS key/value pairs (rarely needed).</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Args { get; init; } = [];
}
