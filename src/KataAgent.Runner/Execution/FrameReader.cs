using System.Buffers.Binary;

namespace KataAgent.Runner.Execution;

/// <summary>One piece of the driver's event stream: a whole control frame, or a slice of an output frame.</summary>
/// <param name="Complete">True for control frames, and for the last slice of an output frame.</param>
internal readonly record struct FramePiece(byte Kind, byte[] Payload, bool Complete);

/// <summary>The driver's event channel carried something the driver never writes (user code wrote to fd 4).</summary>
internal sealed class FrameProtocolException(string message) : Exception(message);

/// <summary>
/// Splits the driver's event stream (1 kind byte, 4-byte big-endian length, payload) into frames.
/// Output frames (o, e) are streamed: their bytes are handed on as they arrive, so a frame of any
/// length (a 200 MiB print, a 1 GiB frame user code wrote to fd 4) never sits in memory whole.
/// Control frames are collected whole but may not exceed <see cref="MaxControlPayload"/>; a longer
/// one, or an unknown kind, is a <see cref="FrameProtocolException"/>: the stream cannot be trusted after it.
/// </summary>
internal sealed class FrameReader
{
    public const int HeaderSize = 5;
    // Completions (500 suggestions) and media items are the largest control frames the driver writes;
    // a media item goes to the agent as one message, so this is also AgentLink's message bound.
    public const int MaxControlPayload = 1024 * 1024;

    private readonly byte[] _header = new byte[HeaderSize];
    private int _headerCount;
    private bool _inPayload;
    private byte _kind;
    private long _remaining;
    private MemoryStream? _control;

    public static bool IsOutputKind(byte kind) => kind is (byte)'o' or (byte)'e';

    private static bool IsControlKind(byte kind) => kind is (byte)'R' or (byte)'w' or (byte)'f' or (byte)'C' or (byte)'m';

    public List<FramePiece> Append(ReadOnlySpan<byte> data)
    {
        var pieces = new List<FramePiece>();
        while (!data.IsEmpty)
        {
            if (!_inPayload)
            {
                int take = Math.Min(HeaderSize - _headerCount, data.Length);
                data[..take].CopyTo(_header.AsSpan(_headerCount));
                _headerCount += take;
                data = data[take..];
                if (_headerCount < HeaderSize)
                {
                    break;
                }
                StartFrame(pieces);
                continue;
            }
            int chunk = (int)Math.Min(_remaining, data.Length);
            _remaining -= chunk;
            if (_control is not null)
            {
                _control.Write(data[..chunk]);
                if (_remaining == 0)
                {
                    pieces.Add(new FramePiece(_kind, _control.ToArray(), Complete: true));
                    _control = null;
                }
            }
            else
            {
                pieces.Add(new FramePiece(_kind, data[..chunk].ToArray(), Complete: _remaining == 0));
            }
            data = data[chunk..];
            if (_remaining == 0)
            {
                _inPayload = false;
                _headerCount = 0;
            }
        }
        return pieces;
    }

    private void StartFrame(List<FramePiece> pieces)
    {
        _kind = _header[0];
        _remaining = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(1, 4));
        if (!IsOutputKind(_kind) && !IsControlKind(_kind))
        {
            throw new FrameProtocolException($"a frame of unknown kind 0x{_kind:x2}");
        }
        if (IsControlKind(_kind) && _remaining > MaxControlPayload)
        {
            throw new FrameProtocolException(
                $"a '{(char)_kind}' frame of {_remaining} bytes (control frames are at most {MaxControlPayload} bytes)");
        }
        _control = IsControlKind(_kind) ? new MemoryStream((int)_remaining) : null;
        if (_remaining == 0)
        {
            pieces.Add(new FramePiece(_kind, [], Complete: true));
            _control = null;
            _headerCount = 0;
            return;
        }
        _inPayload = true;
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
