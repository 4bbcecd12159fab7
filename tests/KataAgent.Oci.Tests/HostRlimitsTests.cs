using static KataAgent.Oci.SpecOpts;

namespace KataAgent.Oci.Tests;

public class HostRlimitsTests
{
    [Fact]
    public void ParsesProcLimitsFormat()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, """
                Limit                     Soft Limit           Hard Limit           Units
                Max cpu time              unlimited            unlimited            seconds
                Max file size             unlimited            unlimited            bytes
                Max processes             95543                95543                processes
                Max open files            1024                 20000                files
                Max file locks            unlimited            unlimited            locks
                """);
            var limits = HostRlimits.CurrentHardLimits(path);
            Assert.Equal(new Dictionary<string, ulong> { ["RLIMIT_NPROC"] = 95543, ["RLIMIT_NOFILE"] = 20000 }, limits);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void CappingNeverRaisesAndKeepsSoftBelowHard()
    {
        var hard = HostRlimits.CurrentHardLimits();
        Assert.True(hard.ContainsKey("RLIMIT_NOFILE"), "the test host's /proc/self/limits has a finite open-files limit");
        var spec = Specs.Generate(WithProcessArgs("/bin/sh"), WithRlimit("RLIMIT_CORE", 0, 0), WithRlimitsCappedToCurrentProcess());
        var nofile = spec.Process!.Rlimits!.Single(r => r.Type == "RLIMIT_NOFILE");
        Assert.Equal(Math.Min(SpecDefaults.NoFileLimit, hard["RLIMIT_NOFILE"]), nofile.Hard);
        Assert.True(nofile.Soft <= nofile.Hard);
        Assert.Equal(0UL, spec.Process.Rlimits!.Single(r => r.Type == "RLIMIT_CORE").Hard);
    }
}
