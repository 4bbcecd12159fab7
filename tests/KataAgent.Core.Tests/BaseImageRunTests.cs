using KataAgent.Containerd.Runtime;
using KataAgent.Core.Containers;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Core.Tests;

/// <summary>Issue 2's end-to-end check: the project's python base image, imported, run on runc and gVisor.</summary>
public sealed class BaseImageRunTests(ContainerdFixture fixture) : IClassFixture<ContainerdFixture>
{
    [Theory]
    [InlineData("runc")]
    [InlineData("gvisor")]
    public async Task Echo_and_uname_in_the_base_image(string runtime)
    {
        var image = await TestImages.ImportPythonAsync(fixture.Client);
        var runtimeClass = runtime == "gvisor"
            ? RuntimeClass.Gvisor(await GvisorWrapper.EnsureAsync(Path.Combine(fixture.RootDir, "bin")))
            : RuntimeClass.Runc();
        var runner = new OneShotRunner(fixture.Client, fixture.RootDir, NullLogger.Instance);
        var launch = new ContainerLaunch($"base-{runtime}-{Guid.NewGuid():N}"[..24], new ResolvedImage(image.Name, image.Config, image.ChainId), runtimeClass)
        {
            Args = ["/bin/sh", "-c", "echo hi; uname -r; python3 -c 'print(6*7)'"],
        };

        var result = await runner.RunAsync(launch, TimeSpan.FromMinutes(2));

        Assert.True(result.ExitCode == 0, $"exit {result.ExitCode}: {result.Stderr}");
        var lines = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("hi", lines[0]);
        var hostRelease = File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
        if (runtime == "gvisor")
            Assert.NotEqual(hostRelease, lines[1]);
        else
            Assert.Equal(hostRelease, lines[1]);
        Assert.Equal("42", lines[2]);

        var census = await LeakCensus.TakeAsync(fixture.Client, fixture.Containerd.SocketPath);
        Assert.True(census.IsClean, census.ToString());
    }
}
