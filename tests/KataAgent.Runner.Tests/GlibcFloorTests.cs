namespace KataAgent.Runner.Tests;

[Collection(RunnerCollection.Name)]
public sealed class GlibcFloorTests(PublishedRunner runner)
{
    private static readonly Version Floor = new(2, 31);

    [Fact]
    public void PublishedRunnerNeedsNoGlibcNewerThan231()
    {
        ElfVersionNeeds needs = ElfVersionNeeds.Read(runner.BinaryPath);
        List<Version> glibcVersions = needs.Versions
            .Where(name => name.StartsWith("GLIBC_", StringComparison.Ordinal) && char.IsDigit(name["GLIBC_".Length]))
            .Select(name => Version.Parse(name["GLIBC_".Length..]))
            .ToList();

        Assert.NotEmpty(glibcVersions);
        Version highest = glibcVersions.Max()!;
        Assert.True(highest <= Floor, $"the runner needs GLIBC_{highest}, newer than the 2.31 floor (Ubuntu 20.04, Debian 11)");
    }

    [Fact]
    public void PublishedRunnerDependsOnGlibcLibrariesOnly()
    {
        ElfVersionNeeds needs = ElfVersionNeeds.Read(runner.BinaryPath);
        string[] glibcLibraries = ["libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "ld-linux-x86-64.so.2"];

        Assert.All(needs.NeededLibraries, library => Assert.Contains(library, glibcLibraries));
        Assert.Contains("libc.so.6", needs.NeededLibraries);
    }
}
