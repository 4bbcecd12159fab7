using MessagePack;

namespace KataAgent.Runner.Protocol;

/// <summary>
/// Decodes the runner's `status` answer: a msgpack map with string keys, values as plain .NET objects.
/// The runner may be hostile (an image can preload code into it), so nesting and element counts are
/// bounded and every malformed input is an <see cref="InvalidDataException"/>, never a stack overflow.
/// </summary>
public static class MessagePackMapReader
{
    /// <summary>Deepest nesting of maps and arrays accepted (a status map needs 3 or 4).</summary>
    public const int MaxDepth = 32;

    /// <summary>Most elements (map entries count once, array items once) in one answer.</summary>
    public const int MaxElements = 100_000;

    public static IReadOnlyDictionary<string, object?> Read(ReadOnlyMemory<byte> payload)
    {
        var reader = new MessagePackReader(payload);
        try
        {
            if (reader.NextMessagePackType != MessagePackType.Map)
            {
                throw new InvalidDataException("the status answer is not a msgpack map");
            }
            int budget = MaxElements;
            return (Dictionary<string, object?>)ReadValue(ref reader, depth: 1, ref budget)!;
        }
        catch (Exception exception) when (exception is MessagePackSerializationException or EndOfStreamException or OverflowException)
        {
            throw new InvalidDataException($"the status answer is not valid msgpack: {exception.Message}", exception);
        }
    }

    private static object? ReadValue(ref MessagePackReader reader, int depth, ref int budget)
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
                EnterContainer(depth);
                int length = reader.ReadArrayHeader();
                Spend(ref budget, length);
                var list = new List<object?>(length);
                for (int i = 0; i < length; i++)
                {
                    list.Add(ReadValue(ref reader, depth + 1, ref budget));
                }
                return list;
            case MessagePackType.Map:
                EnterContainer(depth);
                int count = reader.ReadMapHeader();
                Spend(ref budget, count);
                var map = new Dictionary<string, object?>(count, StringComparer.Ordinal);
                for (int i = 0; i < count; i++)
                {
                    string key = ReadValue(ref reader, depth + 1, ref budget)?.ToString() ?? "";
                    map[key] = ReadValue(ref reader, depth + 1, ref budget);
                }
                return map;
            default:
                reader.Skip();
                return null;
        }
    }

    private static void EnterContainer(int depth)
    {
        if (depth > MaxDepth)
        {
            throw new InvalidDataException($"the status answer nests maps/arrays deeper than {MaxDepth} levels");
        }
    }

    private static void Spend(ref int budget, int elements)
    {
        // ReadArrayHeader/ReadMapHeader already refuse counts larger than the bytes left; this bounds the total.
        budget -= elements;
        if (budget < 0)
        {
            throw new InvalidDataException($"the status answer has more than {MaxElements} elements");
        }
    }
}
