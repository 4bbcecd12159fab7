using System.Buffers;
using System.Text;
using MessagePack;

namespace KataAgent.BackendAi.Rpc;

/// <summary>Callosum's RPC message types (the header's <c>type</c>).</summary>
public enum CallosumMessageType
{
    Null = 0,
    Function = 1,
    Result = 2,
    Failure = 3,
    Error = 4,
    Cancel = 5,
    Cancelled = 6,
}

/// <summary>
/// A request's header frame: <c>{"type", "meth", "okey", "seq", "zip"}</c>. <c>meth</c>, <c>okey</c> and <c>seq</c>
/// are kept as their raw msgpack bytes, because the client matches replies on the exact Python values
/// (<c>""</c> and <c>b""</c> are different order keys), so a reply must carry them back unchanged.
/// </summary>
internal sealed class CallosumHeader
{
    private CallosumHeader(int? type, byte[] rawMethod, byte[] rawOrderKey, byte[] rawSeq, bool? zip, string? problem)
    {
        Type = type;
        RawMethod = rawMethod;
        RawOrderKey = rawOrderKey;
        RawSeq = rawSeq;
        Zip = zip;
        Problem = problem;
        Method = ReadStringOrNull(rawMethod);
        RequestKey = $"{Convert.ToHexString(rawMethod)}|{Convert.ToHexString(rawOrderKey)}|{SeqText(rawSeq)}";
    }

    /// <summary>The message type, or null when the header did not carry an integer one.</summary>
    public int? Type { get; }

    /// <summary>The method name, or null when <c>meth</c> is not a msgpack str.</summary>
    public string? Method { get; }

    public byte[] RawMethod { get; }

    public byte[] RawOrderKey { get; }

    public byte[] RawSeq { get; }

    public bool? Zip { get; }

    /// <summary>What is wrong with an otherwise answerable header (type or zip missing or mistyped), or null.</summary>
    public string? Problem { get; }

    /// <summary>(meth, okey, seq) as one string: what a CANCEL names to reach its FUNCTION.</summary>
    public string RequestKey { get; }

    /// <summary>
    /// Decodes a header frame. Returns null, with the reason, when the request cannot be answered at all because
    /// meth, okey or seq is missing (a reply without them could not be matched by the client).
    /// </summary>
    public static CallosumHeader? TryDecode(ReadOnlyMemory<byte> frame, out string? unanswerableBecause)
    {
        unanswerableBecause = null;
        int? type = null;
        bool? zip = null;
        byte[]? rawMethod = null, rawOrderKey = null, rawSeq = null;
        var problems = new List<string>();
        try
        {
            var reader = new MessagePackReader(frame);
            if (reader.NextMessagePackType != MessagePackType.Map)
            {
                unanswerableBecause = $"the header is a msgpack {reader.NextMessagePackType}, not a map";
                return null;
            }
            int entries = reader.ReadMapHeader();
            for (int i = 0; i < entries; i++)
            {
                string? key = reader.NextMessagePackType == MessagePackType.String ? reader.ReadString() : null;
                switch (key)
                {
                    case "type" when reader.NextMessagePackType == MessagePackType.Integer:
                        type = reader.ReadInt32();
                        break;
                    case "zip" when reader.NextMessagePackType == MessagePackType.Boolean:
                        zip = reader.ReadBoolean();
                        break;
                    case "meth":
                        rawMethod = reader.ReadRaw().ToArray();
                        break;
                    case "okey":
                        rawOrderKey = reader.ReadRaw().ToArray();
                        break;
                    case "seq":
                        rawSeq = reader.ReadRaw().ToArray();
                        break;
                    case "type" or "zip":
                        problems.Add($"header field '{key}' is a msgpack {reader.NextMessagePackType}");
                        reader.Skip();
                        break;
                    default:
                        reader.Skip();
                        break;
                }
            }
        }
        catch (Exception exception) when (exception is MessagePackSerializationException or EndOfStreamException or OverflowException)
        {
            unanswerableBecause = $"the header is not valid msgpack: {exception.Message}";
            return null;
        }
        if (rawMethod is null || rawOrderKey is null || rawSeq is null)
        {
            string missing = string.Join(", ", new[] { ("meth", rawMethod), ("okey", rawOrderKey), ("seq", rawSeq) }
                .Where(field => field.Item2 is null).Select(field => field.Item1));
            unanswerableBecause = $"the header lacks {missing}";
            return null;
        }
        if (type is null && !problems.Any(p => p.Contains("'type'", StringComparison.Ordinal)))
            problems.Add("header field 'type' is missing");
        if (zip is null && !problems.Any(p => p.Contains("'zip'", StringComparison.Ordinal)))
            problems.Add("header field 'zip' is missing");
        return new CallosumHeader(type, rawMethod, rawOrderKey, rawSeq, zip, problems.Count == 0 ? null : string.Join("; ", problems));
    }

    /// <summary>The reply header: <paramref name="type"/>, this request's meth, okey and seq byte for byte, zip false.</summary>
    public byte[] EncodeReply(CallosumMessageType type)
    {
        var buffer = new ArrayBufferWriter<byte>(64 + RawMethod.Length + RawOrderKey.Length);
        var writer = new MessagePackWriter(buffer);
        writer.WriteMapHeader(5);
        writer.Write("type");
        writer.Write((int)type);
        writer.Write("meth");
        writer.WriteRaw(RawMethod);
        writer.Write("okey");
        writer.WriteRaw(RawOrderKey);
        writer.Write("seq");
        writer.WriteRaw(RawSeq);
        // Callosum's server never compresses replies (Peer._send_loop encodes without compress).
        writer.Write("zip");
        writer.Write(false);
        writer.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>How the method shows in logs and errors.</summary>
    public string MethodForDisplay => Method ?? $"<non-str meth 0x{Convert.ToHexString(RawMethod)}>";

    private static string? ReadStringOrNull(byte[] raw)
    {
        try
        {
            var reader = new MessagePackReader(raw);
            return reader.NextMessagePackType == MessagePackType.String ? reader.ReadString() : null;
        }
        catch (MessagePackSerializationException)
        {
            return null;
        }
    }

    // Integers compare by value (a client may encode the same seq in another width); anything else by its bytes.
    private static string SeqText(byte[] raw)
    {
        try
        {
            var reader = new MessagePackReader(raw);
            if (reader.NextMessagePackType == MessagePackType.Integer)
            {
                return raw[0] == MessagePackCode.UInt64 ? reader.ReadUInt64().ToString(System.Globalization.CultureInfo.InvariantCulture)
                    : reader.ReadInt64().ToString(System.Globalization.CultureInfo.InvariantCulture);
            }
        }
        catch (Exception exception) when (exception is MessagePackSerializationException or OverflowException)
        {
            // Falls through to the raw bytes.
        }
        return "raw:" + Convert.ToHexString(raw);
    }
}

/// <summary>The body frame: <c>{"meta": bin, "body": bin | nil}</c>, snappy-compressed as a whole when the header says zip.</summary>
internal static class CallosumBody
{
    /// <summary><c>[]</c> packed: the metadata of RESULT, CANCEL and CANCELLED.</summary>
    private static readonly byte[] EmptyMetadata = [0x90];

    /// <summary>
    /// The FUNCTION body's application document (the <c>body</c> bin), or null for a nil body.
    /// Throws <see cref="CallosumProtocolException"/> naming what is wrong.
    /// </summary>
    public static ReadOnlyMemory<byte>? ReadFunctionDocument(ReadOnlyMemory<byte> frame, bool zip)
    {
        ReadOnlyMemory<byte> data = frame;
        if (zip)
        {
            try
            {
                data = IronSnappy.Snappy.Decode(frame.Span);
            }
            catch (Exception exception) when (exception is InvalidDataException or ArgumentException or IndexOutOfRangeException)
            {
                throw new CallosumProtocolException("ValueError", $"the body frame is flagged zip but is not snappy data: {exception.Message}", exception);
            }
        }
        try
        {
            var reader = new MessagePackReader(data);
            if (reader.NextMessagePackType != MessagePackType.Map)
                throw new CallosumProtocolException("TypeError", $"the body frame is a msgpack {reader.NextMessagePackType}, not a map with meta and body");
            int entries = reader.ReadMapHeader();
            ReadOnlyMemory<byte>? document = null;
            bool sawBody = false;
            for (int i = 0; i < entries; i++)
            {
                string? key = reader.NextMessagePackType == MessagePackType.String ? reader.ReadString() : null;
                if (key != "body")
                {
                    reader.Skip();
                    continue;
                }
                sawBody = true;
                switch (reader.NextMessagePackType)
                {
                    case MessagePackType.Nil:
                        reader.ReadNil();
                        document = null;
                        break;
                    case MessagePackType.Binary:
                        ReadOnlySequence<byte> bytes = reader.ReadBytes()!.Value;
                        document = SliceOf(bytes);
                        break;
                    default:
                        throw new CallosumProtocolException("TypeError", $"the FUNCTION body is a msgpack {reader.NextMessagePackType}, not bin");
                }
            }
            if (!sawBody)
                throw new CallosumProtocolException("KeyError", "the body frame has no 'body' entry");
            return document;
        }
        catch (Exception exception) when (exception is MessagePackSerializationException or EndOfStreamException)
        {
            throw new CallosumProtocolException("ValueError", $"the body frame is not valid msgpack: {exception.Message}", exception);
        }
    }

    public static byte[] EncodeResult(byte[] document) => Encode(EmptyMetadata, document);

    public static byte[] EncodeCancelled() => Encode(EmptyMetadata, null);

    /// <summary>FAILURE and ERROR: meta = <c>[name, repr, traceback]</c>, body nil.</summary>
    public static byte[] EncodeError(string name, string repr, string traceback)
    {
        var buffer = new ArrayBufferWriter<byte>(64 + Encoding.UTF8.GetMaxByteCount(name.Length + repr.Length + traceback.Length));
        var writer = new MessagePackWriter(buffer);
        writer.WriteArrayHeader(3);
        writer.Write(name);
        writer.Write(repr);
        writer.Write(traceback);
        writer.Flush();
        return Encode(buffer.WrittenSpan, null);
    }

    private static byte[] Encode(ReadOnlySpan<byte> metadata, byte[]? document)
    {
        var buffer = new ArrayBufferWriter<byte>(32 + metadata.Length + (document?.Length ?? 0));
        var writer = new MessagePackWriter(buffer);
        writer.WriteMapHeader(2);
        writer.Write("meta");
        writer.Write(metadata);
        writer.Write("body");
        if (document is null)
            writer.WriteNil();
        else
            writer.Write(document);
        writer.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    // The reader reads one contiguous buffer, so the bin is a slice of it (no copy of a large upload).
    private static ReadOnlyMemory<byte> SliceOf(ReadOnlySequence<byte> bytes) => bytes.IsSingleSegment ? bytes.First : bytes.ToArray();
}

/// <summary>A request the server itself cannot serve (answered as ERROR with a Python-style exception name).</summary>
internal sealed class CallosumProtocolException(string pythonName, string message, Exception? inner = null) : Exception(message, inner)
{
    public string PythonName { get; } = pythonName;
}
