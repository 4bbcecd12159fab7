using System.Buffers.Binary;
using System.Text;

namespace KataAgent.Runner.Transport;

/// <summary>
/// Encodes the small flat map that answers `status` in MessagePack. Hand-written (a few formats only)
/// to keep the native runner free of a serializer that relies on reflection.
/// </summary>
internal sealed class MessagePackMap
{
    private readonly List<(string Key, object Value)> _entries = [];

    public MessagePackMap Add(string key, string value) => AddEntry(key, value);

    public MessagePackMap Add(string key, long value) => AddEntry(key, value);

    public MessagePackMap Add(string key, bool value) => AddEntry(key, value);

    public MessagePackMap Add(string key, double value) => AddEntry(key, value);

    public byte[] Encode()
    {
        var output = new List<byte>();
        if (_entries.Count < 16)
        {
            output.Add((byte)(0x80 | _entries.Count));
        }
        else
        {
            output.Add(0xde);
            AddBigEndian(output, (ushort)_entries.Count);
        }
        foreach ((string key, object value) in _entries)
        {
            WriteString(output, key);
            switch (value)
            {
                case string text:
                    WriteString(output, text);
                    break;
                case bool flag:
                    output.Add(flag ? (byte)0xc3 : (byte)0xc2);
                    break;
                case long number:
                    output.Add(0xd3);
                    var eight = new byte[8];
                    BinaryPrimitives.WriteInt64BigEndian(eight, number);
                    output.AddRange(eight);
                    break;
                case double real:
                    output.Add(0xcb);
                    var bits = new byte[8];
                    BinaryPrimitives.WriteDoubleBigEndian(bits, real);
                    output.AddRange(bits);
                    break;
                default:
                    throw new InvalidOperationException($"unsupported value type {value.GetType()}");
            }
        }
        return [.. output];
    }

    private MessagePackMap AddEntry(string key, object value)
    {
        _entries.Add((key, value));
        return this;
    }

    private static void WriteString(List<byte> output, string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        if (bytes.Length < 32)
        {
            output.Add((byte)(0xa0 | bytes.Length));
        }
        else if (bytes.Length < 256)
        {
            output.Add(0xd9);
            output.Add((byte)bytes.Length);
        }
        else if (bytes.Length < 65536)
        {
            output.Add(0xda);
            AddBigEndian(output, (ushort)bytes.Length);
        }
        else
        {
            output.Add(0xdb);
            Span<byte> four = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(four, (uint)bytes.Length);
            output.AddRange(four.ToArray());
        }
        output.AddRange(bytes);
    }

    private static void AddBigEndian(List<byte> output, ushort value)
    {
        output.Add((byte)(value >> 8));
        output.Add((byte)value);
    }
}
