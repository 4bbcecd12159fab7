using static KataAgent.Oci.SpecOpts;

namespace KataAgent.Oci.Tests;

public class ValidationTests
{
    private static InvalidSpecException Fails(params SpecOpt[] opts) =>
        Assert.Throws<InvalidSpecException>(() => Specs.Generate(opts));

    [Fact]
    public void NoArgsAtAll()
    {
        var ex = Fails();
        Assert.Contains("process.args is empty", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void EmptyArgs()
    {
        Assert.Contains("process.args is empty", Fails(WithProcessArgs()).Message, StringComparison.Ordinal);
        Assert.Contains("process.args[0] (the executable) is empty", Fails(WithProcessArgs("")).Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("work")]
    [InlineData("")]
    [InlineData("./x")]
    public void RelativeCwd(string cwd)
    {
        var ex = Fails(WithProcessArgs("/bin/sh"), WithProcessCwd(cwd));
        Assert.Contains($"process.cwd '{cwd}' is not an absolute path", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(-1L)]
    [InlineData(0L)]
    [InlineData(long.MinValue)]
    public void NonPositiveMemory(long bytes)
    {
        var ex = Fails(WithProcessArgs("/bin/sh"), WithMemoryLimit(bytes));
        Assert.Contains($"linux.resources.memory.limit {bytes} must be a positive number of bytes", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void SwapBelowMemory()
    {
        var ex = Fails(WithProcessArgs("/bin/sh"), WithMemoryLimit(1 << 30, 1 << 20));
        Assert.Contains("memory.swap", ex.Message, StringComparison.Ordinal);
        Specs.Generate(WithProcessArgs("/bin/sh"), WithMemoryLimit(1 << 30, -1));
    }

    [Fact]
    public void DuplicateMountDestination()
    {
        var ex = Fails(WithProcessArgs("/bin/sh"), WithBindMount("/srv/a", "/data", true), WithBindMount("/srv/b", "/data/", false));
        Assert.Contains("duplicate mount destination '/data/'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void DuplicateOfADefaultMountAndHowToReplaceIt()
    {
        var ex = Fails(WithProcessArgs("/bin/sh"), WithBindMount("/srv/shm", "/dev/shm", false));
        Assert.Contains("duplicate mount destination '/dev/shm'", ex.Message, StringComparison.Ordinal);

        var spec = Specs.Generate(WithProcessArgs("/bin/sh"), WithoutMount("/dev/shm"), WithBindMount("/srv/shm", "/dev/shm", false));
        Assert.Equal("/srv/shm", Assert.Single(spec.Mounts!, m => m.Destination == "/dev/shm").Source);
    }

    [Theory]
    [InlineData("relative/src", "/data", "not an absolute host path")]
    [InlineData("/srv/a", "data", "destination 'data' is not an absolute path")]
    [InlineData("/srv/a", "/data/../etc", "contains '..'")]
    public void BadBindMounts(string source, string destination, string expected)
    {
        var ex = Fails(WithProcessArgs("/bin/sh"), WithBindMount(source, destination, true));
        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void HostNetworkIsRefused()
    {
        var ex = Fails(WithProcessArgs("/bin/sh"), WithoutNamespace(NamespaceTypes.Network));
        Assert.Contains("no 'network' namespace", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RelativeNamespacePath()
    {
        var ex = Fails(WithProcessArgs("/bin/sh"), WithNetworkNamespacePath("netns/x"));
        Assert.Contains("path 'netns/x' of the 'network' namespace is not absolute", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void HostnameNeedsUtsAndValidName()
    {
        Assert.Contains("no 'uts' namespace", Fails(WithProcessArgs("/bin/sh"), WithHostname("box"), WithoutNamespace("uts")).Message, StringComparison.Ordinal);
        Assert.Contains("not a valid host name", Fails(WithProcessArgs("/bin/sh"), WithHostname("bad_name!")).Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("0-", "cpu.cpus '0-'")]
    [InlineData("a", "cpu.cpus 'a'")]
    public void BadCpuset(string cpus, string expected)
    {
        Assert.Contains(expected, Fails(WithProcessArgs("/bin/sh"), WithCpuset(cpus)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void BadCpuNumbers()
    {
        Assert.Contains("not a positive number", Fails(WithProcessArgs("/bin/sh"), WithCpus(0)).Message, StringComparison.Ordinal);
        Assert.Contains("not a positive number", Fails(WithProcessArgs("/bin/sh"), WithCpus(double.NaN)).Message, StringComparison.Ordinal);
        Assert.Contains("cpu.quota 10", Fails(WithProcessArgs("/bin/sh"), WithCpuQuota(10)).Message, StringComparison.Ordinal);
        Assert.Contains("cpu.period 5000000", Fails(WithProcessArgs("/bin/sh"), WithCpuQuota(100_000, 5_000_000)).Message, StringComparison.Ordinal);
        Assert.Contains("cpu.shares 0", Fails(WithProcessArgs("/bin/sh"), WithCpuShares(0)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void BadPidsLimit()
    {
        Assert.Contains("pids.limit 0", Fails(WithProcessArgs("/bin/sh"), WithPidsLimit(0)).Message, StringComparison.Ordinal);
        Specs.Generate(WithProcessArgs("/bin/sh"), WithPidsLimit(-1));
    }

    [Fact]
    public void BadRlimitAndCapability()
    {
        var ex = Fails(WithProcessArgs("/bin/sh"), WithRlimit("nofile", 1, 1), WithRlimit("RLIMIT_CORE", 10, 5), WithAddedCapabilities("SYS_ADMIN"));
        Assert.Contains("'nofile' is not an rlimit name", ex.Message, StringComparison.Ordinal);
        Assert.Contains("soft limit 10 is above hard limit 5", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'SYS_ADMIN' is not a capability name", ex.Message, StringComparison.Ordinal);
        Assert.Equal(3, ex.Problems.Count);
    }

    [Fact]
    public void BadEnvEntryFromAHandWrittenOption()
    {
        SpecOpt raw = spec => spec.Process!.Env!.AddRange(["NOEQUALS", "A=1", "A=2"]);
        var ex = Fails(WithProcessArgs("/bin/sh"), raw);
        Assert.Contains("'NOEQUALS' is not of the form NAME=VALUE", ex.Message, StringComparison.Ordinal);
        Assert.Contains("sets 'A' more than once", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void DevShmSizeMustBePositive()
    {
        Assert.Contains("/dev/shm size 0", Fails(WithProcessArgs("/bin/sh"), WithDevShmSize(0)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AllProblemsAreReportedTogether()
    {
        var ex = Fails(WithProcessCwd("rel"), WithMemoryLimit(-5));
        Assert.Contains(ex.Problems, p => p.StartsWith("process.args", StringComparison.Ordinal));
        Assert.Contains(ex.Problems, p => p.StartsWith("process.cwd", StringComparison.Ordinal));
        Assert.Contains(ex.Problems, p => p.StartsWith("linux.resources.memory.limit", StringComparison.Ordinal));
    }

    [Fact]
    public void SerializationValidatesAHandEditedSpec()
    {
        var spec = Specs.Generate(WithProcessArgs("/bin/sh"));
        spec.Process!.Cwd = "tmp";
        Assert.Throws<InvalidSpecException>(() => Specs.ToJson(spec));
    }
}
