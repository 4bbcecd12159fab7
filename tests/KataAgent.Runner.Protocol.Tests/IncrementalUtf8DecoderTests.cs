using System.Text;

namespace KataAgent.Runner.Protocol.Tests;

public sealed class IncrementalUtf8DecoderTests
{
    [Theory]
    [InlineData("é")]
    [InlineData("€")]
    [InlineData("😀")]
    [InlineData("a€b😀c")]
    public void CharacterSplitAtAnyByteDecodesWhole(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        for (int split = 1; split < bytes.Length; split++)
        {
            var decoder = new IncrementalUtf8Decoder();
            string decoded = decoder.Decode(bytes.AsSpan(0, split)) + decoder.Decode(bytes.AsSpan(split)) + decoder.Flush();
            Assert.Equal(text, decoded);
        }
    }

    [Fact]
    public void ByteByByteDecodesWhole()
    {
        const string text = "ünïcödé ✓ 😀 end";
        var decoder = new IncrementalUtf8Decoder();
        var decoded = new StringBuilder();
        foreach (byte single in Encoding.UTF8.GetBytes(text))
        {
            decoded.Append(decoder.Decode([single]));
        }
        Assert.Equal(text, decoded.ToString());
    }

    [Fact]
    public void HeldBackBytesAreNotEmittedEarly()
    {
        byte[] euro = Encoding.UTF8.GetBytes("€");
        var decoder = new IncrementalUtf8Decoder();
        Assert.Equal("x", decoder.Decode([(byte)'x', euro[0], euro[1]]));
        Assert.Equal("€", decoder.Decode(euro.AsSpan(2)));
    }

    [Fact]
    public void FlushTurnsAnIncompleteSequenceIntoAReplacementCharacter()
    {
        byte[] euro = Encoding.UTF8.GetBytes("€");
        var decoder = new IncrementalUtf8Decoder();
        Assert.Equal("", decoder.Decode(euro.AsSpan(0, 2)));
        Assert.Equal("\uFFFD", decoder.Flush());
        Assert.Equal("ok", decoder.Decode("ok"u8));
    }
}
