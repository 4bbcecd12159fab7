using System.Text;

namespace KataAgent.Runner.Protocol.Tests;

public sealed class FrameHandlingTests
{
    private static byte[] Ascii(string text) => Encoding.ASCII.GetBytes(text);

    [Fact]
    public void TwoFramesMakeAMessage()
    {
        Assert.True(RunnerMessage.TryParse([Ascii("stdout"), Encoding.UTF8.GetBytes("héllo")], out RunnerMessage message));
        Assert.Equal("stdout", message.Type);
        Assert.Equal("héllo", message.PayloadText);
    }

    [Fact]
    public void EmptyPayloadIsValid()
    {
        Assert.True(RunnerMessage.TryParse([Ascii("status"), []], out RunnerMessage message));
        Assert.Empty(message.Payload);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(5)]
    public void OtherFrameCountsAreIgnored(int frameCount)
    {
        byte[][] frames = Enumerable.Range(0, frameCount).Select(_ => Ascii("stdout")).ToArray();
        Assert.False(RunnerMessage.TryParse(frames, out _));
    }

    [Fact]
    public void GarbageTypesAreIgnored()
    {
        Assert.False(RunnerMessage.TryParse([[], Ascii("x")], out _));
        Assert.False(RunnerMessage.TryParse([[0xff, 0x00, 0x41], Ascii("x")], out _));
        Assert.False(RunnerMessage.TryParse([Ascii("has space"), Ascii("x")], out _));
        Assert.False(RunnerMessage.TryParse([Ascii(new string('a', RunnerMessage.MaxTypeLength + 1)), Ascii("x")], out _));
    }
}
