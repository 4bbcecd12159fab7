namespace KataAgent.Cli.Tests;

/// <summary>When the serve gives memory back: once per quiet spell that follows work, never while busy.</summary>
public sealed class IdleMemoryTrimmerTests
{
    private const long Busy = IdleMemoryTrimmer.QuietBytes;
    private const long Quiet = IdleMemoryTrimmer.QuietBytes - 1;

    [Fact]
    public void A_quiet_check_after_work_trims_once_and_a_longer_quiet_spell_does_not_trim_again()
    {
        var work = false;
        Assert.False(IdleMemoryTrimmer.ShouldTrim(Quiet, ref work)); // nothing happened yet
        Assert.False(IdleMemoryTrimmer.ShouldTrim(Busy, ref work));
        Assert.False(IdleMemoryTrimmer.ShouldTrim(Busy * 100, ref work)); // still busy
        Assert.True(IdleMemoryTrimmer.ShouldTrim(Quiet, ref work));
        Assert.False(IdleMemoryTrimmer.ShouldTrim(0, ref work));
        Assert.False(IdleMemoryTrimmer.ShouldTrim(Quiet, ref work));
        Assert.False(IdleMemoryTrimmer.ShouldTrim(Busy, ref work)); // the next burst
        Assert.True(IdleMemoryTrimmer.ShouldTrim(0, ref work));
    }

    [Fact]
    public void The_start_counts_as_work()
    {
        var work = true; // what the trimmer starts with
        Assert.True(IdleMemoryTrimmer.ShouldTrim(0, ref work));
        Assert.False(work);
    }
}
