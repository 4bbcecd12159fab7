using KataAgent.Containerd.Runtime;
using KataAgent.Core.Containers;
using KataAgent.Oci;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Core.Tests;

public sealed class LaunchTests(ContainerdFixture fixture) : IClassFixture<ContainerdFixture>
{
    private static readonly ImageConfig BusyboxConfig = ImageConfig.Parse("""
        {"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"},
         "rootfs":{"type":"layers","diff_ids":[]}}
        """);

    private async Task<ResolvedImage> BusyboxAsync() =>
        new("test/busybox", BusyboxConfig, await BusyboxSnapshot.EnsureAsync(fixture.Client));

    private async Task<RuntimeClass> RuntimeAsync(string name) => name switch
    {
        "runc" => RuntimeClass.Runc(),
        "gvisor" => RuntimeClass.Gvisor(await GvisorWrapper.EnsureAsync(Path.Combine(fixture.RootDir, "bin"))),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [Theory]
    [InlineData("runc")]
    [InlineData("gvisor")]
    public async Task Busybox_echo_runs_and_leaves_nothing_behind(string runtime)
    {
        var runner = new OneShotRunner(fixture.Client, fixture.RootDir, NullLogger.Instance);
        var launch = new ContainerLaunch("echo-" + runtime + "-" + Guid.NewGuid().ToString("N")[..6], await BusyboxAsync(), await RuntimeAsync(runtime))
        {
            Args = ["/bin/sh", "-c", "echo hi; uname -r"],
        };
        var result = await runner.RunAsync(launch, TimeSpan.FromMinutes(2));
        Assert.True(result.ExitCode == 0, $"exit {result.ExitCode}, stderr: {result.Stderr}");
        var lines = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("hi", lines[0]);
        var hostRelease = File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
        if (runtime == "gvisor")
            Assert.NotEqual(hostRelease, lines[1]);
        else
            Assert.Equal(hostRelease, lines[1]);

        var census = await LeakCensus.TakeAsync(fixture.Client, fixture.Containerd.SocketPath);
        Assert.True(census.IsClean, census.ToString());
    }

    [Theory]
    [InlineData("snapshot")]
    [InlineData("spec")]
    [InlineData("container")]
    [InlineData("task")]
    [InlineData("start")]
    public async Task A_failure_at_any_step_undoes_every_earlier_one(string step)
    {
        var launcher = new ContainerLauncher(fixture.Client, NullLogger.Instance) { FailBeforeStep = step };
        var launch = new ContainerLaunch("fail-" + step + "-" + Guid.NewGuid().ToString("N")[..6], await BusyboxAsync(), RuntimeClass.Runc())
        {
            Args = ["/bin/sleep", "30"],
        };
        var e = await Assert.ThrowsAsync<ContainerLaunchException>(() => launcher.LaunchAsync(launch));
        Assert.Equal(step, e.Step);
        var census = await LeakCensus.TakeAsync(fixture.Client, fixture.Containerd.SocketPath);
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task A_missing_executable_fails_at_start_and_leaves_nothing()
    {
        var launcher = new ContainerLauncher(fixture.Client, NullLogger.Instance);
        var launch = new ContainerLaunch("noexec-" + Guid.NewGuid().ToString("N")[..6], await BusyboxAsync(), RuntimeClass.Runc())
        {
            Args = ["/no/such/binary"],
        };
        var e = await Assert.ThrowsAsync<ContainerLaunchException>(() => launcher.LaunchAsync(launch));
        Assert.Contains("/no/such/binary", e.Message, StringComparison.Ordinal);
        var census = await LeakCensus.TakeAsync(fixture.Client, fixture.Containerd.SocketPath);
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task A_gvisor_task_whose_start_fails_is_still_reaped()
    {
        var launcher = new ContainerLauncher(fixture.Client, NullLogger.Instance);
        var launch = new ContainerLaunch("gv-noexec-" + Guid.NewGuid().ToString("N")[..6], await BusyboxAsync(), await RuntimeAsync("gvisor"))
        {
            Args = ["/no/such/binary"],
        };
        await Assert.ThrowsAsync<ContainerLaunchException>(() => launcher.LaunchAsync(launch));
        var census = await LeakCensus.TakeAsync(fixture.Client, fixture.Containerd.SocketPath);
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task A_kata_container_record_carries_the_kata_runtime()
    {
        var container = await RecordOfUnstartedContainerAsync("kata-" + Guid.NewGuid().ToString("N")[..6],
            RuntimeClass.Kata("/opt/kata/share/defaults/kata-containers/configuration-qemu.toml"));
        Assert.Equal("io.containerd.kata.v2", container.Runtime.Name);
        Assert.Equal("runtimeoptions.v1.Options", container.Runtime.Options.TypeUrl);
        var options = global::Runtimeoptions.V1.Options.Parser.ParseFrom(container.Runtime.Options.Value);
        Assert.Equal("/opt/kata/share/defaults/kata-containers/configuration-qemu.toml", options.ConfigPath);
        var spec = Specs.FromJson(container.Spec.Value.Span);
        Assert.DoesNotContain(spec.Linux!.Namespaces!, n => n.Type == "time");
    }

    [Fact]
    public async Task A_kata_clh_container_record_carries_the_kata_shim_and_the_cloud_hypervisor_config()
    {
        var clh = Runtime.RuntimeClassTable.Get("kata-clh");
        var container = await RecordOfUnstartedContainerAsync("kata-clh-" + Guid.NewGuid().ToString("N")[..6],
            clh.BuildRuntime(new Runtime.RuntimeClassSettings(new AgentOptions(), "/unused")));
        Assert.Equal("io.containerd.kata.v2", container.Runtime.Name);
        var options = global::Runtimeoptions.V1.Options.Parser.ParseFrom(container.Runtime.Options.Value);
        Assert.Equal(clh.DefaultConfigPath, options.ConfigPath);
    }

    /// <summary>
    /// Spec-level, for runtimes this machine cannot start (Kata): the container record as the launcher writes it,
    /// read back between its steps container and task; the launch then fails before the task and leaves nothing.
    /// </summary>
    private async Task<global::Containerd.Services.Containers.V1.Container> RecordOfUnstartedContainerAsync(string id, RuntimeClass runtime)
    {
        var launcher = new ContainerLauncher(fixture.Client, NullLogger.Instance) { FailBeforeStep = "task" };
        var launch = new ContainerLaunch(id, await BusyboxAsync(), runtime) { Args = ["/bin/true"] };
        var recorded = new TaskCompletionSource<global::Containerd.Services.Containers.V1.Container>();
        launcher.AfterStep = async (step, ct) =>
        {
            if (step == "container")
                recorded.TrySetResult(await fixture.Client.Containers.GetAsync(id, ct));
        };
        await Assert.ThrowsAsync<ContainerLaunchException>(() => launcher.LaunchAsync(launch));
        var container = await recorded.Task;
        Assert.Null(await fixture.Client.Containers.FindAsync(id));
        return container;
    }
}
