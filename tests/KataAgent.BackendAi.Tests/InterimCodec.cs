using System.Buffers;
using KataAgent.BackendAi.Serialization;
using MessagePack;

namespace KataAgent.BackendAi.Tests;

// TEMPORARY until s17-codec is merged: plain msgpack only (no ext types). Deleted at the merge.
internal sealed class BackendAiCodec : IBackendAiCodec
{
    public static BackendAiCodec Instance { get; } = new();

    public byte[] Pack(object? value)
    {
        var buffer = new ArrayBufferWriter<byte>();
        var writer = new MessagePackWriter(buffer);
        Write(ref writer, value);
        writer.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    private static void Write(ref MessagePackWriter w, object? v)
    {
        switch (v)
        {
            case null: w.WriteNil(); break;
            case bool b: w.Write(b); break;
            case long l: w.Write(l); break;
            case int i: w.Write(i); break;
            case double d: w.Write(d); break;
            case string s: w.Write(s); break;
            case byte[] bin: w.Write(bin); break;
            case object?[] a:
                w.WriteArrayHeader(a.Length);
                foreach (var x in a) Write(ref w, x);
                break;
            case System.Collections.IDictionary m:
                w.WriteMapHeader(m.Count);
                foreach (System.Collections.DictionaryEntry e in m) { Write(ref w, e.Key); Write(ref w, e.Value); }
                break;
            default: throw new NotSupportedException($"interim codec: {v.GetType()}");
        }
    }

    public object? Unpack(ReadOnlyMemory<byte> data)
    {
        var r = new MessagePackReader(data);
        return Read(ref r);
    }

    private static object? Read(ref MessagePackReader r)
    {
        switch (r.NextMessagePackType)
        {
            case MessagePackType.Nil: r.ReadNil(); return null;
            case MessagePackType.Boolean: return r.ReadBoolean();
            case MessagePackType.Integer: return r.ReadInt64();
            case MessagePackType.Float: return r.ReadDouble();
            case MessagePackType.String: return r.ReadString();
            case MessagePackType.Binary: return r.ReadBytes()!.Value.ToArray();
            case MessagePackType.Array:
                var a = new object?[r.ReadArrayHeader()];
                for (var i = 0; i < a.Length; i++) a[i] = Read(ref r);
                return a;
            case MessagePackType.Map:
                var n = r.ReadMapHeader();
                var m = new Dictionary<object, object?>();
                for (var i = 0; i < n; i++) { var k = Read(ref r)!; m[k] = Read(ref r); }
                return m;
            default: throw new NotSupportedException("interim codec: ext");
        }
    }
}
