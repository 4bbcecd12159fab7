using System.Buffers;
using System.Collections;
using System.Runtime.CompilerServices;
using System.Text;
using MessagePack;

namespace KataAgent.BackendAi.Serialization;

/// <summary>
/// Backend.AI's application serializer (<c>ai.backend.common.msgpack</c>): msgpack with bin and str kept apart,
/// Python tuples and lists as arrays, and the ext codes listed in PyValues.cs. Pack writes what the Python packer
/// (use_bin_type, strict_types) writes for the same values, byte for byte; Unpack reads as the Python unpacker
/// (raw=False, strict_map_key=False, use_list=False) does.
/// </summary>
public sealed class BackendAiCodec : IBackendAiCodec
{
    private const sbyte ExtUuid = 1;
    private const sbyte ExtDatetime = 2;
    private const sbyte ExtDecimal = 3;
    private const sbyte ExtEnum = 6;
    private const sbyte ExtImageRef = 7;
    private const sbyte ExtResourceSlot = 8;
    private const sbyte ExtBinarySize = 16;

    // Python's msgpack refuses nesting deeper than its stack too; this keeps hostile input off ours.
    private const int MaxDepth = 256;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public static BackendAiCodec Instance { get; } = new();

    public byte[] Pack(object? value)
    {
        var buffer = new ArrayBufferWriter<byte>();
        var writer = new MessagePackWriter(buffer);
        Write(ref writer, value, 0);
        writer.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    public object? Unpack(ReadOnlyMemory<byte> data)
    {
        var reader = new MessagePackReader(data);
        try
        {
            var value = Read(ref reader, 0);
            if (!reader.End)
            {
                throw new BackendAiCodecException($"{data.Length - reader.Consumed} bytes follow the msgpack value");
            }

            return value;
        }
        catch (EndOfStreamException e)
        {
            throw new BackendAiCodecException($"msgpack data is truncated ({data.Length} bytes)", e);
        }
        catch (MessagePackSerializationException e)
        {
            throw new BackendAiCodecException($"msgpack data is malformed: {e.Message}", e);
        }
    }

    private static object? Read(ref MessagePackReader reader, int depth)
    {
        if (depth > MaxDepth)
        {
            throw new BackendAiCodecException($"msgpack nesting is deeper than {MaxDepth}");
        }

        switch (reader.NextMessagePackType)
        {
            case MessagePackType.Nil:
                reader.ReadNil();
                return null;
            case MessagePackType.Boolean:
                return reader.ReadBoolean();
            case MessagePackType.Integer:
                if (reader.NextCode == MessagePackCode.UInt64)
                {
                    var unsigned = reader.ReadUInt64();
                    return unsigned <= long.MaxValue ? (long)unsigned : unsigned;
                }

                return reader.ReadInt64();
            case MessagePackType.Float:
                return reader.ReadDouble();
            case MessagePackType.String:
                return DecodeUtf8(reader.ReadStringSequence()!.Value, "msgpack str");
            case MessagePackType.Binary:
                return reader.ReadBytes()!.Value.ToArray();
            case MessagePackType.Array:
                var items = new object?[reader.ReadArrayHeader()];
                for (var i = 0; i < items.Length; i++)
                {
                    items[i] = Read(ref reader, depth + 1);
                }

                return items;
            case MessagePackType.Map:
                var count = reader.ReadMapHeader();
                var map = new Dictionary<object, object?>(count, PyKeyComparer.Instance);
                for (var i = 0; i < count; i++)
                {
                    var key = Read(ref reader, depth + 1) ?? throw new BackendAiCodecException(
                        "msgpack map has a nil key, which .NET dictionaries cannot hold");
                    if (key is object?[])
                    {
                        // Python would need a tuple key here; arrays compare by reference in .NET.
                        throw new BackendAiCodecException("msgpack map has an array key, which is not supported");
                    }

                    map[key] = Read(ref reader, depth + 1);
                }

                return map;
            case MessagePackType.Extension:
                var header = reader.ReadExtensionFormatHeader();
                var payload = reader.ReadRaw(header.Length).ToArray();
                return ReadExt(header.TypeCode, payload);
            default:
                throw new BackendAiCodecException($"msgpack byte 0x{reader.NextCode:x2} starts no value");
        }
    }

    private static object? ReadExt(sbyte code, byte[] payload)
    {
        switch (code)
        {
            case ExtUuid:
                if (payload.Length != 16)
                {
                    throw new BackendAiCodecException($"ext 1 (UUID) carries {payload.Length} bytes; a UUID has 16");
                }

                return new Guid(payload, bigEndian: true);
            case ExtDatetime:
                try
                {
                    return Temporenc.Decode(payload);
                }
                catch (BackendAiCodecException e)
                {
                    throw new BackendAiCodecException($"ext 2 (datetime): {e.Message}", e);
                }

            case ExtDecimal:
                return Expect<decimal>(PickleReader.Load(payload, "ext 3 (Decimal)"), "ext 3 (Decimal)");
            case (sbyte)PyPathKind.PosixPath:
            case (sbyte)PyPathKind.PurePosixPath:
            case (sbyte)PyPathKind.AutoDirectoryPath:
                var kind = (PyPathKind)code;
                return new PyPath(DecodeUtf8(new ReadOnlySequence<byte>(payload), $"ext {code} ({kind})"), kind);
            case ExtEnum:
                return Expect<PyEnum>(PickleReader.Load(payload, "ext 6 (enum)", enumContext: true), "ext 6 (enum)");
            case ExtImageRef:
                return Expect<PyImageRef>(PickleReader.Load(payload, "ext 7 (ImageRef)"), "ext 7 (ImageRef)");
            case ExtResourceSlot:
                return Expect<ResourceSlot>(PickleReader.Load(payload, "ext 8 (ResourceSlot)"), "ext 8 (ResourceSlot)");
            case ExtBinarySize:
                return Expect<BinarySize>(PickleReader.Load(payload, "ext 16 (BinarySize)"), "ext 16 (BinarySize)");
            default:
                return new MsgPackExt(code, payload);
        }
    }

    private static T Expect<T>(object? value, string what) => value is T typed
        ? typed
        : throw new BackendAiCodecException($"{what} unpickled to a {value?.GetType().Name ?? "None"}, not a {typeof(T).Name}");

    private static string DecodeUtf8(ReadOnlySequence<byte> bytes, string what)
    {
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException e)
        {
            throw new BackendAiCodecException($"{what} is not valid UTF-8", e);
        }
    }

    private static void Write(ref MessagePackWriter writer, object? value, int depth)
    {
        if (depth > MaxDepth)
        {
            throw new ArgumentException($"value nests deeper than {MaxDepth} levels (a cycle?)", nameof(value));
        }

        switch (value)
        {
            case null:
                writer.WriteNil();
                break;
            case bool flag:
                writer.Write(flag);
                break;
            case string text:
                writer.Write(text);
                break;
            case long or int or short or sbyte or byte or ushort or uint:
                writer.Write(Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture));
                break;
            case ulong unsigned:
                writer.Write(unsigned);
                break;
            case double number:
                writer.Write(number);
                break;
            case float number:
                // Python floats are doubles; its packer always writes float 64.
                writer.Write((double)number);
                break;
            case byte[] bytes:
                writer.Write(bytes.AsSpan());
                break;
            case ReadOnlyMemory<byte> memory:
                writer.Write(memory.Span);
                break;
            case Memory<byte> memory:
                writer.Write(memory.Span);
                break;
            case Guid id:
                var uuid = new byte[16];
                id.TryWriteBytes(uuid, bigEndian: true, out _);
                WriteExt(ref writer, ExtUuid, uuid);
                break;
            case DateTimeOffset moment:
                WriteExt(ref writer, ExtDatetime, Temporenc.EncodeAware(moment));
                break;
            case DateTime moment:
                WriteExt(ref writer, ExtDatetime, moment.Kind switch
                {
                    DateTimeKind.Unspecified => Temporenc.EncodeNaive(moment),
                    _ => Temporenc.EncodeAware(new DateTimeOffset(moment)),
                });
                break;
            case decimal number:
                WriteExt(ref writer, ExtDecimal, PickleWriter.Decimal(number));
                break;
            case PyPath path:
                WriteExt(ref writer, (sbyte)path.Kind, Encoding.UTF8.GetBytes(path.Path));
                break;
            case PyEnum member:
                WriteExt(ref writer, ExtEnum, PickleWriter.Enum(member));
                break;
            case PyImageRef image:
                WriteExt(ref writer, ExtImageRef, PickleWriter.ImageRef(image));
                break;
            case ResourceSlot slots:
                WriteExt(ref writer, ExtResourceSlot, PickleWriter.ResourceSlot(slots));
                break;
            case BinarySize size:
                WriteExt(ref writer, ExtBinarySize, PickleWriter.BinarySize(size));
                break;
            case MsgPackExt ext:
                WriteExt(ref writer, ext.Code, ext.Data);
                break;
            case IDictionary map:
                writer.WriteMapHeader(map.Count);
                foreach (DictionaryEntry entry in map)
                {
                    Write(ref writer, entry.Key, depth + 1);
                    Write(ref writer, entry.Value, depth + 1);
                }

                break;
            case IList list:
                writer.WriteArrayHeader(list.Count);
                foreach (var item in list)
                {
                    Write(ref writer, item, depth + 1);
                }

                break;
            case ITuple tuple:
                writer.WriteArrayHeader(tuple.Length);
                for (var i = 0; i < tuple.Length; i++)
                {
                    Write(ref writer, tuple[i], depth + 1);
                }

                break;
            default:
                throw new ArgumentException(
                    $"Backend.AI's serializer has no encoding for {value.GetType().FullName} ({value})", nameof(value));
        }
    }

    private static void WriteExt(ref MessagePackWriter writer, sbyte code, byte[] payload)
    {
        writer.WriteExtensionFormatHeader(new ExtensionHeader(code, (uint)payload.Length));
        writer.WriteRaw(payload);
    }
}
