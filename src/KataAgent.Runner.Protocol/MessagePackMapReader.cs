using MessagePack;

namespace KataAgent.Runner.Protocol;

/// <summary>Decodes the runner's `status` answer: a msgpack map with string keys, values as plain .NET objects.</summary>
public static class MessagePackMapReader
{
    public static IReadOnlyDictionary<string, object?> Read(ReadOnlyMemory<byte> payload)
    {
        var reader = new MessagePackReader(payload);
        if (reader.NextMessagePackType != MessagePackType.Map)
        {
            throw new InvalidDataException("the status answer is not a msgpack map");
        }
        return (Dictionary<string, object?>)ReadValue(ref reader)!;
    }

    private static object? ReadValue(ref MessagePackReader reader)
    {
        switch (reader.NextMessagePackType)
        {
            case MessagePackType.Nil:
                reader.ReadNil();
                return null;
            case MessagePackType.Boolean:
                return reader.ReadBoolean();
            case MessagePackType.Integer:
                return reader.ReadInt64();
            case MessagePackType.Float:
                return reader.ReadDouble();
            case MessagePackType.String:
                return reader.ReadString();
            case MessagePackType.Binary:
                System.Buffers.ReadOnlySequence<byte>? bytes = reader.ReadBytes();
                return bytes is { } sequence ? System.Buffers.BuffersExtensions.ToArray(sequence) : null;
            case MessagePackType.Array:
                int length = reader.ReadArrayHeader();
                var list = new List<object?>(length);
                for (int i = 0; i < length; i++)
                {
                    list.Add(ReadValue(ref reader));
                }
                return list;
            case MessagePackType.Map:
                int count = reader.ReadMapHeader();
                var map = new Dictionary<string, object?>(count, StringComparer.Ordinal);
                for (int i = 0; i < count; i++)
                {
                    string key = ReadValue(ref reader)?.ToString() ?? "";
                    map[key] = ReadValue(ref reader);
                }
                return map;
            default:
                reader.Skip();
                return null;
        }
    }
}
