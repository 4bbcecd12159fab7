using KataAgent.Containerd.Runtime;
using KataAgent.Core.Containers;
using KataAgent.Core.Events;
using KataAgent.Oci;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Core.Tests;

public sealed class EventMonitorTests(ContainerdFixture fixture) : IClassFixture<ContainerdFixture>
{
    [Fact]
    public async Task A_task_exit_arrives_as_an_event_with_its_exit_code()
    {
        await using var monitor = new TaskEventMonitor(fixture.Client, NullLogger.Instance);
        await monitor.StartAsync();
        var image = new ResolvedImage("test/busybox",
            ImageConfig.Parse("""{"config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"""),
            await BusyboxSnapshot.EnsureAsync(fixture.Client));
        var id = "exit7-" + Guid.NewGuid().ToString("N")[..6];
        var launcher = new ContainerLauncher(fixture.Client, NullLogger.Instance);
        await launcher.LaunchAsync(new ContainerLaunch(id, image, RuntimeClass.Runc()) { Args = ["/bin/sh", "-c", "exit 7"] });
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            TaskEvent? seen = null;
            while (seen is null)
            {
                var e = await monitor.Events.ReadAsync(timeout.Token);
                if (e.ContainerId == id)
                    seen = e;
            }
            var exited = Assert.IsType<TaskExited>(seen);
            Assert.Equal(7, exited.ExitCode);
        }
        finally
        {
            await TaskReaper.ReapContainerAsync(fixture.Client, id, TaskReaper.SigKill, TimeSpan.Zero, NullLogger.Instance);
        }
    }
}
