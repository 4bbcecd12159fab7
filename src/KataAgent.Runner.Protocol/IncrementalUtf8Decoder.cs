using System.Text;

namespace KataAgent.Runner.Protocol;

/// <summary>
/// Decodes a UTF-8 byte stream that arrives in chunks: a multi-byte character split across two
/// chunks is held back until its last byte arrives, instead of turning into replacement characters.
/// </summary>
public sealed class IncrementalUtf8Decoder
{
    private readonly Decoder _decoder = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();

    public string Decode(ReadOnlySpan<byte> chunk) => Convert(chunk, flush: false);

    /// <summary>Ends the stream: an incomplete trailing sequence becomes U+FFFD.</summary>
    public string Flush() => Convert([], flush: true);

    private string Convert(ReadOnlySpan<byte> bytes, bool flush)
    {
        // GetChars must see every byte, even when it yields no character yet: that is what keeps the
        // start of a split character in the decoder's state.
        int count = _decoder.GetCharCount(bytes, flush);
        Span<char> chars = count <= 256 ? stackalloc char[count] : new char[count];
        int written = _decoder.GetChars(bytes, chars, flush);
        return new string(chars[..written]);
    }
}
