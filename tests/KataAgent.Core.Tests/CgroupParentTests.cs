using KataAgent.Core.Cgroups;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Core.Tests;

/// <summary>What the agent reads of the host's cgroup mounts, and the parent paths it accepts.</summary>
public sealed class CgroupMountInfoTests
{
    [Fact]
    public void Hybrid_v1_layout_lists_each_hierarchy_with_its_controllers_and_the_unified_one()
    {
        var hierarchies = SessionCgroupParent.ParseMountInfo(
        [
            "25 20 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
            "26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate",
            "28 25 0:25 / /sys/fs/cgroup/cpuset rw,relatime shared:6 - cgroup cgroup rw,cpuset",
            "29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:7 - cgroup cgroup rw,cpu,cpuacct",
            "30 25 0:27 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd",
            // A hierarchy mounted from below its root (a container's view) is not the host's: left out.
            "31 25 0:28 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
            "32 25 0:29 / /mnt/with\\040space rw - cgroup cgroup rw,pids",
        ]);
        Assert.Equal(["/mnt/with space", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuset", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"],
            hierarchies.Select(h => h.MountPoint));
        Assert.True(hierarchies.Single(h => h.MountPoint.EndsWith("cpuset", StringComparison.Ordinal)).Has("cpuset"));
        Assert.Equal(["cpu", "cpuacct"], hierarchies.Single(h => h.MountPoint.EndsWith("cpuacct", StringComparison.Ordinal)).Controllers);
        Assert.Equal(["name=systemd"], hierarchies.Single(h => h.MountPoint.EndsWith("systemd", StringComparison.Ordinal)).Controllers);
        Assert.True(hierarchies.Single(h => h.MountPoint.EndsWith("unified", StringComparison.Ordinal)).IsUnified);
    }

    [Theory]
    [InlineData("kata-agent", "absolute")]
    [InlineData("/", "root cgroup")]
    [InlineData("/a/../b", "'..'")]
    [InlineData("/a/./b", "'.'")]
    public void A_bad_parent_path_is_refused_with_the_reason(string path, string reason)
    {
        var e = Assert.Throws<ArgumentException>(() => SessionCgroupParent.ParsePath(path));
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_nested_parent_on_this_host_gets_cpus_and_mems_from_the_root_and_is_removed_again()
    {
        var name = "/kat-cg-" + Guid.NewGuid().ToString("N")[..8];
        var parent = SessionCgroupParent.ForHost(name + "/inner");
        try
        {
            await parent.EnsureAsync();
            foreach (var dir in parent.Directories)
                Assert.True(Directory.Exists(dir), dir);
            var cpuset = parent.Hierarchies.FirstOrDefault(h => h.Has("cpuset"));
            if (cpuset is not null)
            {
                foreach (var file in new[] { "cpuset.cpus", "cpuset.mems" })
                {
                    var root = File.ReadAllText(Path.Combine(cpuset.MountPoint, file)).Trim();
                    Assert.Equal(root, File.ReadAllText(Path.Combine(cpuset.MountPoint, name.TrimStart('/'), file)).Trim());
                    Assert.Equal(root, File.ReadAllText(Path.Combine(cpuset.MountPoint, name.TrimStart('/'), "inner", file)).Trim());
                }
            }
            await parent.EnsureAsync(); // idempotent
            Assert.Empty(parent.Children());
        }
        finally
        {
            Assert.Empty(parent.RemoveIfEmpty());
        }
        Assert.All(parent.Hierarchies, h => Assert.False(Directory.Exists(Path.Combine(h.MountPoint, name.TrimStart('/'))), h.MountPoint));
    }
}

public sealed class FreshCgroupRuncFixture : AgentFixture;
public sealed class FreshCgroupGvisorFixture : AgentFixture;

/// <summary>
/// A host where no session ever ran: the fixture's cgroup parent did not exist before its agent started. The first
/// session of either runtime class works (runsc alone would make a cpuset parent without cpus), pinning holds, and a
/// parent removed while the agent runs comes back on the next create.
/// </summary>
public abstract class FreshCgroupTestsBase(AgentFixture fixture, string runtime)
{
    [Fact]
    public async Task The_first_session_works_and_a_removed_parent_comes_back_on_the_next_create()
    {
        var agent = fixture.Agent;
        var cgroups = agent.Services.Cgroups;
        Assert.StartsWith("/kaa-", cgroups.Path, StringComparison.Ordinal);

        await RunOneSessionAsync(agent, cgroups);

        // An operator (or a reboot of the cgroup mounts) removes the parents while the agent runs.
        Assert.Empty(cgroups.RemoveIfEmpty());
        Assert.All(cgroups.Directories, d => Assert.False(Directory.Exists(d), d));
        await RunOneSessionAsync(agent, cgroups);
    }

    private async Task RunOneSessionAsync(Agent agent, SessionCgroupParent cgroups)
    {
        var session = await agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime, Cpus = 1 });
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            var output = "";
            await foreach (var e in agent.ExecuteAsync(session.KernelId, "r1", ExecutionMode.Query, "import platform; print('hello from', platform.release())",
                new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) }, timeout.Token))
            {
                if (e is OutputEvent { Item.Kind: "stdout" } o)
                    output += o.Item.Data;
            }
            Assert.StartsWith("hello from ", output, StringComparison.Ordinal);
            if (runtime == "gvisor")
                Assert.Equal("hello from 4.4.0\n", output);

            // Pinning holds: the session's cpuset cgroup has exactly the cores it was given.
            var cpuset = cgroups.Hierarchies.FirstOrDefault(h => h.Has("cpuset"));
            if (cpuset is not null)
            {
                var dir = Path.Combine(cpuset.MountPoint, cgroups.Path.TrimStart('/'), session.KernelId);
                Assert.True(Directory.Exists(dir), $"no cpuset cgroup {dir}");
                Assert.Equal(session.Record.CpuSet, (await File.ReadAllTextAsync(Path.Combine(dir, "cpuset.cpus"))).Trim());
            }
        }
        finally
        {
            await agent.DestroySessionAsync(session.KernelId);
        }
        var census = await AgentLeakCensus.TakeAsync(agent);
        Assert.True(census.IsClean, census.ToString());
    }
}

public sealed class FreshCgroupRuncTests(FreshCgroupRuncFixture fixture) : FreshCgroupTestsBase(fixture, "runc"), IClassFixture<FreshCgroupRuncFixture>;
public sealed class FreshCgroupGvisorTests(FreshCgroupGvisorFixture fixture) : FreshCgroupTestsBase(fixture, "gvisor"), IClassFixture<FreshCgroupGvisorFixture>;
