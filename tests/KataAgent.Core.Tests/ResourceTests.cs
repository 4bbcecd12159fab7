using KataAgent.Containerd.Runtime;
using KataAgent.Core.Resources;
using KataAgent.Core.Sessions;
using KataAgent.Oci;

namespace KataAgent.Core.Tests;

public sealed class ResourceAllocatorTests
{
    private static ResourceAllocator Allocator(int cpus = 4, long memGiB = 8) => new(new ResourceOptions
    {
        TotalCpus = cpus,
        TotalMemoryBytes = memGiB << 30,
        ReservedCpus = 0,
        ReservedMemoryBytes = 0,
    });

    // What the kata class's table entry charges per session with resources.kata_vm_overhead = 160MiB.
    private static readonly long VmOverhead = Runtime.RuntimeClassTable.Get("kata")
        .OverheadBytes(new AgentOptions { Resources = new ResourceOptions { KataVmOverheadBytes = 160L << 20 } });

    [Fact]
    public void A_request_that_does_not_fit_names_what_is_short_and_holds_nothing()
    {
        var allocator = Allocator(cpus: 4, memGiB: 8);
        allocator.Allocate("a", new ResourceSlots(3, 6L << 30), overheadBytes: 0);
        var e = Assert.Throws<InsufficientResourcesException>(() => allocator.Allocate("b", new ResourceSlots(2, 3L << 30), overheadBytes: 0));
        Assert.Contains("cpu short by 1", e.Message, StringComparison.Ordinal);
        Assert.Contains("memory short by 1024 MiB", e.Message, StringComparison.Ordinal);
        Assert.Single(allocator.Allocations);
        Assert.Equal(new ResourceSlots(1, 2L << 30), allocator.Available);
    }

    [Fact]
    public void A_kata_session_also_costs_its_vm_overhead()
    {
        var allocator = Allocator(cpus: 8, memGiB: 2);
        allocator.Allocate("vm1", new ResourceSlots(1, 1L << 30), overheadBytes: VmOverhead);
        Assert.Equal((1L << 30) + (160L << 20), allocator.Used.MemoryBytes);
        // 1 GiB more fits for a container, not for a VM that adds 160 MiB.
        var e = Assert.Throws<InsufficientResourcesException>(() => allocator.Allocate("vm2", new ResourceSlots(1, (1L << 30) - (100L << 20)), overheadBytes: VmOverhead));
        Assert.Contains("VM overhead", e.Message, StringComparison.Ordinal);
        allocator.Allocate("ctr", new ResourceSlots(1, (1L << 30) - (200L << 20)), overheadBytes: 0);
        Assert.True(allocator.Release("vm1"));
        Assert.False(allocator.Release("vm1"));
    }

    [Fact]
    public void Whole_cores_are_pinned_to_the_least_loaded_ones()
    {
        var allocator = Allocator(cpus: Environment.ProcessorCount * 4);
        var cores = ResourceAllocator.ParseCpuSet(File.ReadAllText("/sys/devices/system/cpu/online").Trim());
        var first = allocator.Allocate("a", new ResourceSlots(1, 1 << 30), overheadBytes: 0);
        var second = allocator.Allocate("b", new ResourceSlots(1, 1 << 30), overheadBytes: 0);
        Assert.Single(ResourceAllocator.ParseCpuSet(first.CpuSet));
        if (cores.Count > 1)
            Assert.NotEqual(first.CpuSet, second.CpuSet);
        var wide = allocator.Allocate("c", new ResourceSlots(cores.Count, 1 << 30), overheadBytes: 0);
        Assert.Equal(cores, ResourceAllocator.ParseCpuSet(wide.CpuSet));
    }

    [Theory]
    [InlineData("0-3,8,10-11", new[] { 0, 1, 2, 3, 8, 10, 11 })]
    [InlineData("5", new[] { 5 })]
    public void Cpusets_parse_and_format(string text, int[] cores)
    {
        Assert.Equal(cores, ResourceAllocator.ParseCpuSet(text));
        Assert.Equal(text, ResourceAllocator.FormatCpuSet(cores));
    }
}

/// <summary>Spec-level Kata checks: the VM sizing annotations (Kata cannot run here).</summary>
public sealed class KataSessionSpecTests
{
    private static Spec Generate(AgentOptions options, double cpus = 2, long memory = 3L << 30) =>
        Generate(options, RuntimeClass.Kata(), new SessionRequest { Image = "img" }, cpus, memory);

    private static Spec Generate(AgentOptions options, RuntimeClass runtime, SessionRequest request, double cpus = 2, long memory = 3L << 30)
    {
        var record = new SessionRecord
        {
            KernelId = "k1", SessionId = "s1", ContainerId = "k1", Image = "img", RuntimeClass = "kata",
            Cpus = cpus, MemoryBytes = memory, ShmBytes = 64 << 20, NetnsPath = "/var/run/netns/ka-k1", CpuSet = "0-1",
        };
        var opts = SessionSpec.Options(new SessionSpecInputs(record, request, "/tmp/w", "/tmp/c", runtime, options with { RunnerDir = "/opt/r" }));
        return Specs.Generate([SpecOpts.WithProcessArgs("/bin/true"), .. opts]);
    }

    [Fact]
    public void Sizing_annotations_follow_the_allocation_plus_headroom_when_enabled()
    {
        var spec = Generate(new AgentOptions { Kata = new KataOptions { SizingAnnotations = true, HeadroomCpus = 0.5, HeadroomMemoryBytes = 512L << 20 } });
        Assert.Equal("3", spec.Annotations!["io.katacontainers.config.hypervisor.default_vcpus"]);
        Assert.Equal("3584", spec.Annotations["io.katacontainers.config.hypervisor.default_memory"]);
        Assert.Equal(3L << 30, spec.Linux!.Resources!.Memory!.Limit);
        Assert.Equal("/var/run/netns/ka-k1", spec.Linux.Namespaces!.Single(n => n.Type == "network").Path);
        Assert.DoesNotContain(spec.Linux.Namespaces!, n => n.Type == "time");
    }

    [Fact]
    public void Stock_configs_get_no_sizing_annotations_and_only_allowed_ones_go_in()
    {
        var off = Generate(new AgentOptions());
        Assert.DoesNotContain(off.Annotations ?? [], a => a.Key.StartsWith(SessionSpec.KataAnnotationPrefix, StringComparison.Ordinal));
        var vcpusOnly = Generate(new AgentOptions { Kata = new KataOptions { SizingAnnotations = true, AllowedAnnotations = ["default_vcpus"] } });
        Assert.Contains(SessionSpec.KataAnnotationPrefix + "default_vcpus", vcpusOnly.Annotations!.Keys);
        Assert.DoesNotContain(SessionSpec.KataAnnotationPrefix + "default_memory", vcpusOnly.Annotations.Keys);
    }

    [Fact]
    public void Sessions_get_a_restricted_capability_set_unless_the_request_adds_to_it()
    {
        foreach (var runtime in new[] { RuntimeClass.Kata(), RuntimeClass.Runc(), RuntimeClass.Gvisor("/w") })
        {
            var caps = Generate(new AgentOptions(), runtime, new SessionRequest { Image = "img" }).Process!.Capabilities!;
            foreach (var set in new[] { caps.Bounding, caps.Effective, caps.Permitted })
                Assert.Empty(set!.Intersect(["CAP_MKNOD", "CAP_SETFCAP", "CAP_NET_RAW", "CAP_SYS_PTRACE"]));
            Assert.Contains("CAP_CHOWN", caps.Bounding!);
            var seccomp = Generate(new AgentOptions(), runtime, new SessionRequest { Image = "img" }).Linux!.Seccomp!;
            Assert.DoesNotContain(seccomp.Syscalls!, r => r.Action == SeccompActions.Allow && r.Names.Contains("ptrace"));
        }
        var added = Generate(new AgentOptions(), RuntimeClass.Runc(), new SessionRequest { Image = "img", AddCapabilities = ["CAP_MKNOD", "CAP_SYS_PTRACE"] });
        Assert.Contains("CAP_MKNOD", added.Process!.Capabilities!.Bounding!);
        Assert.Contains(added.Linux!.Seccomp!.Syscalls!, r => r.Action == SeccompActions.Allow && r.Names.Contains("process_vm_readv"));
    }

    [Fact]
    public void Swap_is_capped_at_the_memory_limit_where_the_host_accounts_it_and_left_to_the_VM_under_Kata()
    {
        var runc = Generate(new AgentOptions(), RuntimeClass.Runc(), new SessionRequest { Image = "img" }).Linux!.Resources!.Memory!;
        Assert.Equal(3L << 30, runc.Limit);
        Assert.Equal(Cgroups.SwapAccounting.OnHost ? 3L << 30 : null, runc.Swap);
        Assert.Null(Generate(new AgentOptions()).Linux!.Resources!.Memory!.Swap);
    }

    [Fact]
    public void Kata_memory_never_goes_below_its_256_MiB_minimum()
    {
        var spec = Generate(new AgentOptions { Kata = new KataOptions { SizingAnnotations = true, HeadroomMemoryBytes = 0 } }, cpus: 0.5, memory: 64L << 20);
        Assert.Equal("256", spec.Annotations![SessionSpec.KataAnnotationPrefix + "default_memory"]);
        Assert.Equal("1", spec.Annotations[SessionSpec.KataAnnotationPrefix + "default_vcpus"]);
    }
}

public sealed class DataDirLockUnitTests
{
    [Fact]
    public void A_taken_data_dir_names_its_holder_and_is_free_once_released()
    {
        var dir = Directory.CreateTempSubdirectory("kat-lock-").FullName;
        try
        {
            var holder = new Locking.DataDirLockHolder("serve", Environment.ProcessId, "/run/x.sock");
            using (var first = Locking.DataDirLock.Acquire(dir, holder))
            {
                // flock is per open file: a second open in the same process is refused like another process would be.
                var e = Assert.Throws<Locking.DataDirLockedException>(() => Locking.DataDirLock.Acquire(dir, holder with { Kind = "run" }));
                Assert.Equal(holder, e.Holder);
                Assert.Contains($"kata-agent serve (pid {Environment.ProcessId}, socket /run/x.sock)", e.Message, StringComparison.Ordinal);
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(first.Path));
            }
            using var again = Locking.DataDirLock.Acquire(dir, holder with { Kind = "run", Socket = null });
            Assert.Equal(new Locking.DataDirLockHolder("run", Environment.ProcessId, null), Locking.DataDirLock.ReadHolder(dir));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Capacity_refusals_name_the_sessions_holding_the_room_and_overcommit_multiplies_cpus()
    {
        var allocator = new ResourceAllocator(new ResourceOptions { TotalCpus = 2, TotalMemoryBytes = 8L << 30, ReservedMemoryBytes = 0 });
        allocator.Allocate("holder-a", new ResourceSlots(2, 1L << 30), overheadBytes: 0);
        var e = Assert.Throws<InsufficientResourcesException>(() => allocator.Allocate("b", new ResourceSlots(1, 1L << 30), overheadBytes: 0));
        Assert.Contains("held by 1 session(s): holder-a (cpu 2, 1024 MiB)", e.Message, StringComparison.Ordinal);
        Assert.Contains("kata-agent session ls", e.Message, StringComparison.Ordinal);

        var overcommitted = new ResourceAllocator(new ResourceOptions { TotalCpus = 2, TotalMemoryBytes = 8L << 30, ReservedMemoryBytes = 0, CpuOvercommit = 2 });
        Assert.Equal(4, overcommitted.Capacity.Cpus);
        for (var i = 0; i < 4; i++)
            overcommitted.Allocate($"s{i}", new ResourceSlots(1, 1L << 30), overheadBytes: 0);
        Assert.Throws<InsufficientResourcesException>(() => overcommitted.Allocate("s4", new ResourceSlots(1, 1L << 30), overheadBytes: 0));
        Assert.All(overcommitted.Allocations, a => Assert.Single(ResourceAllocator.ParseCpuSet(a.CpuSet)));
    }
}
