using KataAgent.Core.Cgroups;

namespace KataAgent.Cli.Tests;

/// <summary>The README's config: default class kata, which this host cannot run, so sessions fall back to gVisor.</summary>
public sealed class FreshHostEnvironment : CliEnvironment
{
    protected override string DefaultClass => "kata";
}

/// <summary>The README's main job on a host where no session ever ran (the cgroup parent does not exist yet).</summary>
public sealed class FreshHostTests(FreshHostEnvironment env) : IClassFixture<FreshHostEnvironment>
{
    private const string MainJob = "import platform; print(\"hello from\", platform.release())";
    private const string FallbackWarning = "default runtime class 'kata' is not usable here";

    [Fact]
    public async Task The_main_job_works_where_no_session_ever_ran()
    {
        var parent = SessionCgroupParent.ForHost(env.CgroupParent);
        Assert.All(parent.Directories, d => Assert.False(Directory.Exists(d), $"{d} exists before the first session"));

        // The first run also builds and imports the base image, and says so.
        var first = await env.RunAsync("run", "-c", MainJob);
        Assert.True(first.ExitCode == 0, first.ToString());
        Assert.Equal("hello from 4.4.0\n", first.Stdout);
        Assert.Contains(FallbackWarning, first.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", first.Stderr, StringComparison.Ordinal);

        // Parents gone again (as on a fresh host), image in place: the warning is all that stderr holds.
        Assert.Empty(parent.RemoveIfEmpty());
        Assert.All(parent.Directories, d => Assert.False(Directory.Exists(d), d));
        var second = await env.RunAsync("run", "-c", MainJob);
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.Equal("hello from 4.4.0\n", second.Stdout);
        var lines = second.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length <= 1 && lines.All(l => l.StartsWith(FallbackWarning, StringComparison.Ordinal)), second.ToString());
        Assert.Empty(env.ProcessesOfThisEnvironment());
    }

    [Theory]
    [InlineData(1, "run", "kata-agent/no-such-image:1", "-c", "print(1)")]
    [InlineData(2, "run", "--mem", "lots", "-c", "print(1)")]
    [InlineData(1, "run", "--cpu", "64", "-c", "print(1)")]
    [InlineData(1, "run", "--runtime", "kata", "-c", "print(1)")]
    public async Task A_failing_run_prints_exactly_one_error_line(int exitCode, params string[] args)
    {
        var result = await env.RunAsync(args);
        Assert.True(result.ExitCode == exitCode, result.ToString());
        Assert.Equal("", result.Stdout);
        Assert.True(Text.LineCount(result.Stderr) == 1, result.ToString());
        Assert.StartsWith("error: ", result.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", result.Stderr, StringComparison.Ordinal);
        Assert.Empty(env.ProcessesOfThisEnvironment());
    }
}
