using Google.Protobuf.Collections;

namespace KataAgent.Containerd;

internal static class MapFieldExtensions
{
    public static void Add(this MapField<string, string> map, IReadOnlyDictionary<string, string> entries)
    {
        foreach (var (key, value) in entries)
            map[key] = value;
    }
}
