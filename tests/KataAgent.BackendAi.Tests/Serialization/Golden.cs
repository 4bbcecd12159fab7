using System.Text.Json;

namespace KataAgent.BackendAi.Tests.Serialization;

/// <summary>assets/golden/golden.json, written once by CPython (assets/make_golden.py) and checked in.</summary>
internal static class Golden
{
    private static readonly Lazy<JsonDocument> Document = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "assets", "golden", "golden.json"))));

    /// <summary>Bytes of packb(value) for a Python value.</summary>
    public static byte[] Packed(string name) => Bytes("packed", name);

    /// <summary>Bytes Python never writes but reads (other temporenc precisions, float 32).</summary>
    public static byte[] Crafted(string name) => Bytes("crafted", name);

    public static IEnumerable<string> PackedNames() =>
        Document.Value.RootElement.GetProperty("packed").EnumerateObject().Select(p => p.Name);

    private static byte[] Bytes(string section, string name) => Convert.FromHexString(
        Document.Value.RootElement.GetProperty(section).GetProperty(name).GetProperty("hex").GetString()!);
}
