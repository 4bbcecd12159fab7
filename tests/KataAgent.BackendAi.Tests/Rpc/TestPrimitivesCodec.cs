using System.Buffers;
using KataAgent.BackendAi.Serialization;
using MessagePack;

namespace KataAgent.BackendAi.Tests.Rpc;

/// <summary>
/// Plain msgpack for primitives, bin, arrays and maps (what the Python client's "plain" serializer writes), until
/// the real BackendAiCodec lands on this branch.
/// </summary>
internal sealed class TestPrimitivesCodec : IBackendAiCodec
{
    public byte[] Pack(object? value)
    {
        var buffer = new ArrayBufferWriter<byte>();
        var writer = new MessagePackWriter(buffer);
        Write(ref writer, value);
        writer.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    public object? Unpack(ReadOnlyMemory<byte> data)
    {
        var reader = new MessagePackReader(data);
        return Read(ref reader);
    }

    private static void Write(ref MessagePackWriter writer, object? value)
    {
        switch (value)
        {
            case null: writer.WriteNil(); break;
            case bool b: writer.Write(b); break;
            case int i: writer.Write(i); break;
            case long l: writer.Write(l); break;
            case double d: writer.Write(d); break;
            case string s: writer.Write(s); break;
            case byte[] bytes: writer.Write(bytes); break;
            case object?[] items:
                writer.WriteArrayHeader(items.Length);
                foreach (object? item in items)
                {
                    Write(ref writer, item);
                }
                break;
            case System.Collections.IDictionary map:
                writer.WriteMapHeader(map.Count);
                foreach (System.Collections.DictionaryEntry entry in map)
                {
                    Write(ref writer, entry.Key);
                    Write(ref writer, entry.Value);
                }
                break;
            default: throw new NotSupportedException($"the test codec cannot pack a {value.GetType().Name}");
        }
    }

    private static object? Read(ref MessagePackReader reader)
    {
        switch (reader.NextMessagePackType)
        {
            case MessagePackType.Nil: reader.ReadNil(); return null;
            case MessagePackType.Boolean: return reader.ReadBoolean();
            case MessagePackType.Integer: return reader.ReadInt64();
            case MessagePackType.Float: return reader.ReadDouble();
            case MessagePackType.String: return reader.ReadString();
            case MessagePackType.Binary: return reader.ReadBytes()!.Value.ToArray();
            case MessagePackType.Array:
                var items = new object?[reader.ReadArrayHeader()];
                for (int i = 0; i < items.Length; i++)
                {
                    items[i] = Read(ref reader);
                }
                return items;
            case MessagePackType.Map:
                int count = reader.ReadMapHeader();
                var map = new Dictionary<object, object?>(count);
                for (int i = 0; i < count; i++)
                {
                    object key = Read(ref reader) ?? throw new InvalidDataException("nil map key");
                    map[key] = Read(ref reader);
                }
                return map;
            default: throw new InvalidDataException($"the test codec cannot unpack a msgpack {reader.NextMessagePackType}");
        }
    }
}
