using System.Buffers.Binary;

namespace KataAgent.Runner.Execution;

/// <summary>
/// Splits the driver's event stream (1 kind byte, 4-byte big-endian length, payload) into frames;
/// bytes of an incomplete frame are kept for the next chunk.
/// </summary>
internal sealed class FrameReader
{
    public const int HeaderSize = 5;
    private byte[] _pending = new byte[64 * 1024];
    private int _pendingCount;

    public List<(byte Kind, byte[] Payload)> Append(ReadOnlySpan<byte> data)
    {
        if (_pendingCount + data.Length > _pending.Length)
        {
            Array.Resize(ref _pending, Math.Max(_pending.Length * 2, _pendingCount + data.Length));
        }
        data.CopyTo(_pending.AsSpan(_pendingCount));
        _pendingCount += data.Length;

        var frames = new List<(byte, byte[])>();
        int offset = 0;
        while (_pendingCount - offset >= HeaderSize)
        {
            int length = (int)BinaryPrimitives.ReadUInt32BigEndian(_pending.AsSpan(offset + 1, 4));
            if (_pendingCount - offset - HeaderSize < length)
            {
                break;
            }
            frames.Add((_pending[offset], _pending.AsSpan(offset + HeaderSize, length).ToArray()));
            offset += HeaderSize + length;
        }
        _pendingCount -= offset;
        _pending.AsSpan(offset, _pendingCount).CopyTo(_pending);
        return frames;
    }

    public static byte[] Encode(byte kind, ReadOnlySpan<byte> payload)
    {
        var frame = new byte[HeaderSize + payload.Length];
        frame[0] = kind;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1, 4), (uint)payload.Length);
        payload.CopyTo(frame.AsSpan(HeaderSize));
        return frame;
    }
}
