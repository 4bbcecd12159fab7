
namespace KataAgent.Runner.Protocol.Tests;

public sealed class RunOutputBufferTests
{
    [Fact]
    public void ConsecutiveStdoutAndStderrChunksAreMerged()
    {
        var buffer = new RunOutputBuffer(1000);
        buffer.AppendOutput("stdout", "a");
        buffer.AppendOutput("stdout", "b");
        buffer.AppendOutput("stderr", "c");
        buffer.AppendOutput("stderr", "d");
        buffer.AppendOutput("stdout", "e");
        buffer.AppendOutput("media", "{}");
        buffer.AppendOutput("media", "{}");

        (List<ConsoleItem> items, RunBoundary? boundary, long dropped) = buffer.Drain();

        Assert.Null(boundary);
        Assert.Equal(0, dropped);
        Assert.Equal(
            [new("stdout", "ab"), new("stderr", "cd"), new("stdout", "e"), new("media", "{}"), new("media", "{}")],
            items);
    }

    [Fact]
    public void AMediaItemIsDroppedWholeNeverCut()
    {
        var buffer = new RunOutputBuffer(100);
        buffer.AppendOutput("media", new string('i', 60), "image/png");
        buffer.AppendOutput("stdout", new string('s', 60));

        (List<ConsoleItem> items, _, long dropped) = buffer.Drain();

        Assert.Equal(60, dropped);
        Assert.DoesNotContain(items, item => item.Kind == "media");
        Assert.Equal(new string('s', 60), items[^1].Data);
        Assert.StartsWith("[kata-agent: 60 characters", items[0].Data);
    }

    [Fact]
    public void MediaKeepsItsMimeThroughDrainAndUnread()
    {
        var buffer = new RunOutputBuffer(1000);
        buffer.AppendOutput("media", "<svg/>", "image/svg+xml");
        (List<ConsoleItem> items, _, _) = buffer.Drain();
        buffer.Unread(items);

        Assert.Equal([ConsoleItem.Media("image/svg+xml", "<svg/>")], buffer.Drain().Items);
    }

    [Fact]
    public void DrainStopsAtTheFirstBoundary()
    {
        var buffer = new RunOutputBuffer(1000);
        buffer.AppendOutput("stdout", "cleaning");
        buffer.AppendBoundary(new RunBoundary("clean-finished", 0, null));
        buffer.AppendOutput("stdout", "building");
        buffer.AppendBoundary(new RunBoundary("build-finished", 1, null));

        (List<ConsoleItem> first, RunBoundary? firstEnd, _) = buffer.Drain();
        (List<ConsoleItem> second, RunBoundary? secondEnd, _) = buffer.Drain();
        (List<ConsoleItem> rest, RunBoundary? none, _) = buffer.Drain();

        Assert.Equal([new("stdout", "cleaning")], first);
        Assert.Equal("clean-finished", firstEnd!.Status);
        Assert.Equal([new("stdout", "building")], second);
        Assert.Equal(1, secondEnd!.ExitCode);
        Assert.Empty(rest);
        Assert.Null(none);
    }

    [Fact]
    public void UnreadPutsItemsBackInFront()
    {
        var buffer = new RunOutputBuffer(1000);
        buffer.AppendOutput("stdout", "later");
        buffer.Unread([new("stderr", "x"), new("stdout", "earlier ")]);

        (List<ConsoleItem> items, _, _) = buffer.Drain();

        Assert.Equal([new("stderr", "x"), new("stdout", "earlier "), new("stdout", "later")], items);
    }

    [Fact]
    public void UncollectedOutputIsBoundedAndTheDropIsMarked()
    {
        const int limit = 10_000;
        var buffer = new RunOutputBuffer(limit);
        for (int i = 0; i < 2000; i++)
        {
            buffer.AppendOutput("stdout", $"{i:D9}\n");
            Assert.True(buffer.BufferedCharacters <= limit);
        }

        (List<ConsoleItem> items, _, long dropped) = buffer.Drain();

        Assert.Equal(2, items.Count);
        Assert.Equal("stderr", items[0].Kind);
        Assert.Equal(RunOutputBuffer.DroppedMarker(dropped), items[0].Data);
        string kept = items[1].Data;
        Assert.Equal(20_000 - kept.Length, dropped);
        Assert.EndsWith("000001999\n", kept);
        // What is kept is the newest output, in order, starting mid-line at most.
        string[] lines = kept.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        int last = int.Parse(lines[^1], System.Globalization.CultureInfo.InvariantCulture);
        for (int i = 1; i < lines.Length; i++)
        {
            Assert.Equal(last - (lines.Length - 1 - i), int.Parse(lines[i], System.Globalization.CultureInfo.InvariantCulture));
        }
    }

    [Fact]
    public void BoundariesAreNeverDropped()
    {
        var buffer = new RunOutputBuffer(100);
        buffer.AppendOutput("stdout", new string('a', 90));
        buffer.AppendBoundary(new RunBoundary("clean-finished", 0, null));
        buffer.AppendOutput("stdout", new string('b', 90));

        (List<ConsoleItem> first, RunBoundary? end, long dropped) = buffer.Drain();

        Assert.Equal("clean-finished", end!.Status);
        Assert.True(dropped > 0);
        Assert.Contains(first, item => item.Data.StartsWith("[kata-agent:", StringComparison.Ordinal));
    }

    [Fact]
    public void TrimmingNeverSplitsASurrogatePair()
    {
        var buffer = new RunOutputBuffer(9);
        buffer.AppendOutput("stdout", string.Concat(Enumerable.Repeat("😀", 5)));

        (List<ConsoleItem> items, _, _) = buffer.Drain();

        string kept = items.Single(item => item.Kind == "stdout").Data;
        Assert.False(char.IsLowSurrogate(kept[0]));
        Assert.Equal(0, kept.Length % 2);
    }

    [Fact]
    public void ConsoleBuilderMergesAcrossDrains()
    {
        var console = new ConsoleBuilder();
        console.AddRange([new("stdout", "a"), new("stderr", "b")]);
        console.AddRange([new("stderr", "c"), new("stdout", "d")]);

        Assert.Equal([new("stdout", "a"), new("stderr", "bc"), new("stdout", "d")], console.Build());
    }
}
