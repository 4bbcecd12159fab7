using System.Globalization;
using System.Text.Json;
using KataAgent.BackendAi.Rpc;
using KataAgent.BackendAi.Serialization;
using KataAgent.Core.Sessions;

namespace KataAgent.BackendAi.Kernels;

/// <summary>Reads a call's arguments (positional or keyword) as the codec decodes them; bad ones answer Python-style errors.</summary>
internal static class RpcArgs
{
    public static object? Get(RpcCall call, int index, string name, bool required = true)
    {
        if (call.Kwargs.TryGetValue(name, out var value))
            return value;
        if (index < call.Args.Count)
            return call.Args[index];
        if (required)
            throw new BackendAiRpcException("TypeError", $"{call.Method}() missing required argument: '{name}'");
        return null;
    }

    /// <summary>A kernel or session id: a UUID string (or an ext-1 UUID), kept as Backend.AI prints it.</summary>
    public static string Id(object? value, string name) => value switch
    {
        Guid guid => guid.ToString(),
        string text when Guid.TryParse(text, out var guid) => guid.ToString(),
        string text => throw new BackendAiRpcException("ValueError", $"{name}: badly formed UUID string '{text}'"),
        _ => throw TypeError(name, "a UUID string", value),
    };

    /// <summary>A string, or a pickled str-valued enum (its value).</summary>
    public static string Text(object? value, string name) => value switch
    {
        string text => text,
        PyEnum { Value: string text } => text,
        PyPath path => path.Path,
        _ => throw TypeError(name, "a string", value),
    };

    public static string? OptionalText(object? value, string name) => value is null ? null : Text(value, name);

    public static Dictionary<object, object?> Map(object? value, string name) =>
        value as Dictionary<object, object?> ?? throw TypeError(name, "a map", value);

    public static object?[] Array(object? value, string name) => value as object?[] ?? throw TypeError(name, "a list", value);

    public static object? Field(Dictionary<object, object?> map, string key) => map.TryGetValue(key, out var v) ? v : null;

    public static Dictionary<object, object?> RequireMap(Dictionary<object, object?> map, string key, string owner) =>
        map.TryGetValue(key, out var v) ? Map(v, $"{owner}.{key}") : throw new BackendAiRpcException("KeyError", $"'{key}' (missing in {owner})");

    public static long? Long(object? value, string name) => value switch
    {
        null => null,
        long l => l,
        int i => i,
        double d when d == Math.Floor(d) => (long)d,
        decimal m when m == decimal.Truncate(m) => (long)m,
        BinarySize size => size.Bytes,
        string s when long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) => l,
        _ => throw TypeError(name, "an integer", value),
    };

    public static double? Double(object? value, string name) => value switch
    {
        null => null,
        double d => d,
        long l => l,
        decimal m => (double)m,
        _ => throw TypeError(name, "a number", value),
    };

    public static bool Bool(object? value, string name, bool fallback) => value switch
    {
        null => fallback,
        bool b => b,
        _ => throw TypeError(name, "a bool", value),
    };

    /// <summary>A resource-slot amount as the manager sends it: "1", "0.5", "1073741824", "1g" (binary suffixes), or a number.</summary>
    public static decimal Amount(object? value, string name)
    {
        switch (value)
        {
            case long l: return l;
            case double d: return (decimal)d;
            case decimal m: return m;
            case BinarySize size: return size.Bytes;
            case string s:
                // A plain number ("0.5" cpus) as it is; a size with a suffix ("1g") as Backend.AI's BinarySize reads it.
                if (decimal.TryParse(s.Trim(), NumberStyles.Number, CultureInfo.InvariantCulture, out var amount))
                    return amount;
                return ImageLabels.ParseBinarySize(s) ?? throw new BackendAiRpcException("ValueError", $"{name}: '{s}' is not an amount");
            default:
                throw TypeError(name, "an amount", value);
        }
    }

    public static BackendAiRpcException TypeError(string name, string expected, object? value) =>
        new("TypeError", $"{name} must be {expected} (got {Describe(value)})");

    private static string Describe(object? value) => value switch
    {
        null => "None",
        string s => $"str '{s}'",
        _ => value.GetType().Name,
    };

    /// <summary>A JSON value as the codec's value model (maps, arrays, strings, longs, doubles).</summary>
    public static object? FromJson(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Object => element.EnumerateObject().ToDictionary(p => (object)p.Name, p => FromJson(p.Value)),
        JsonValueKind.Array => element.EnumerateArray().Select(FromJson).ToArray(),
        JsonValueKind.String => element.GetString(),
        JsonValueKind.Number => element.TryGetInt64(out var l) ? l : element.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };
}
