using KataAgent.Containerd.Runtime;
using KataAgent.Core.Runtime;
using KataAgent.Core.Sessions;
using KataAgent.Oci;

namespace KataAgent.Core.Tests;

/// <summary>The runtime-class table is consistent, and kata-clh (a class added as one entry) is right at spec level.</summary>
public sealed class RuntimeClassTableTests
{
    private static readonly RuntimeClassSettings Settings = new(new AgentOptions(), "/data/bin/runsc-kata-agent");

    [Fact]
    public void Every_entry_is_unique_and_builds_a_runtime_of_its_own_name_and_kind()
    {
        Assert.Equal(RuntimeClassTable.All.Count, RuntimeClassTable.All.Select(d => d.Name).Distinct(StringComparer.Ordinal).Count());
        Assert.Equal(RuntimeClassTable.All.Count, RuntimeClassTable.All.Select(d => d.DoctorExitBit).Distinct().Count());
        foreach (var d in RuntimeClassTable.All)
        {
            // One bit each, clear of doctor's own (8: common, 16: hardening), and inside an exit status.
            Assert.True(d.DoctorExitBit is > 0 and < 256 and not 8 and not 16 && (d.DoctorExitBit & (d.DoctorExitBit - 1)) == 0, d.Name);
            var runtime = d.BuildRuntime(Settings);
            Assert.Equal(d.Name, runtime.Name);
            Assert.Equal(d.Kind, runtime.Kind);
            Assert.Equal(d.IsVm, runtime.IsVm);
            Assert.NotEmpty(d.HostChecks(Settings.Options));
            // Only a VM costs host memory beyond its allocation.
            Assert.Equal(d.IsVm, d.OverheadBytes(Settings.Options) > 0);
        }
    }

    [Fact]
    public void The_existing_classes_keep_their_doctor_bits_and_kinds()
    {
        Assert.Equal((1, RuntimeKind.Vm), (RuntimeClassTable.Get("kata").DoctorExitBit, RuntimeClassTable.Get("kata").Kind));
        Assert.Equal((2, RuntimeKind.UserSpaceKernel), (RuntimeClassTable.Get("gvisor").DoctorExitBit, RuntimeClassTable.Get("gvisor").Kind));
        Assert.Equal((4, RuntimeKind.SharedKernel), (RuntimeClassTable.Get("runc").DoctorExitBit, RuntimeClassTable.Get("runc").Kind));
        Assert.Equal(RuntimeClass.RuncRuntimeType, RuntimeClassTable.Get("gvisor").BuildRuntime(Settings).RuntimeType);
        Assert.Null(RuntimeClassTable.Get("kata").BuildRuntime(Settings).Options);
        // Only runc shares the host kernel: the one class the agent never falls back to.
        Assert.Equal(["runc"], RuntimeClassTable.All.Where(d => !d.IsolatesKernel).Select(d => d.Name));
        var e = Assert.Throws<ArgumentException>(() => RuntimeClassTable.Get("docker"));
        Assert.Contains("kata, kata-clh, gvisor, runc", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Kata_clh_is_the_kata_shim_with_the_cloud_hypervisor_config()
    {
        var clh = RuntimeClassTable.Get("kata-clh");
        Assert.True(clh.IsVm);
        var runtime = clh.BuildRuntime(Settings);
        Assert.Equal("io.containerd.kata.v2", runtime.RuntimeType);
        Assert.Equal("runtimeoptions.v1.Options", runtime.Options!.TypeUrl);
        Assert.Equal("/opt/kata/share/defaults/kata-containers/runtimes/clh/configuration-clh.toml",
            global::Runtimeoptions.V1.Options.Parser.ParseFrom(runtime.Options.Value).ConfigPath);
        var settings = Settings with
        {
            Options = new AgentOptions { RuntimeConfigPaths = new Dictionary<string, string>(StringComparer.Ordinal) { ["kata-clh"] = "/etc/kata/clh.toml" } },
        };
        var configured = clh.BuildRuntime(settings);
        Assert.Equal("/etc/kata/clh.toml", global::Runtimeoptions.V1.Options.Parser.ParseFrom(configured.Options!.Value).ConfigPath);
        // Another class's config path does not leak into kata's, which stays the host default.
        Assert.Null(RuntimeClassTable.Get("kata").BuildRuntime(settings).Options);
    }

    [Fact]
    public void Kata_clh_needs_kvm_and_its_config_but_not_vhost_vsock()
    {
        var names = RuntimeClassTable.Get("kata-clh").HostChecks(new AgentOptions()).Select(c => c.Name).ToList();
        Assert.Contains("/dev/kvm", names);
        Assert.Contains("containerd-shim-kata-v2", names);
        Assert.Contains("config", names);
        Assert.DoesNotContain("/dev/vhost-vsock", names);
        Assert.Contains("/dev/vhost-vsock", RuntimeClassTable.Get("kata").HostChecks(new AgentOptions()).Select(c => c.Name));
    }

    [Fact]
    public void Kata_clh_sessions_get_the_vm_sizing_and_the_vm_overhead()
    {
        var options = new AgentOptions
        {
            RunnerDir = "/opt/r",
            Kata = new KataOptions { SizingAnnotations = true, HeadroomCpus = 0.5, HeadroomMemoryBytes = 512L << 20 },
            Resources = new ResourceOptions { KataVmOverheadBytes = 130L << 20 },
        };
        var record = new SessionRecord
        {
            KernelId = "k1", SessionId = "s1", ContainerId = "k1", Image = "img", RuntimeClass = "kata-clh",
            Cpus = 2, MemoryBytes = 3L << 30, ShmBytes = 64 << 20, NetnsPath = "/var/run/netns/ka-k1", CpuSet = "0-1",
        };
        var clh = RuntimeClassTable.Get("kata-clh");
        var runtime = clh.BuildRuntime(new RuntimeClassSettings(options, "/w"));
        var spec = Specs.Generate([SpecOpts.WithProcessArgs("/bin/true"),
            .. SessionSpec.Options(new SessionSpecInputs(record, new SessionRequest { Image = "img" }, "/tmp/w", "/tmp/c", runtime, options))]);
        Assert.Equal("3", spec.Annotations![SessionSpec.KataAnnotationPrefix + "default_vcpus"]);
        Assert.Equal("3584", spec.Annotations[SessionSpec.KataAnnotationPrefix + "default_memory"]);
        Assert.Null(spec.Linux!.Resources!.Memory!.Swap);
        Assert.DoesNotContain(spec.Linux.Namespaces!, n => n.Type == "time");
        Assert.Equal(130L << 20, clh.OverheadBytes(options));
    }

    [Fact]
    public async Task A_class_whose_host_checks_fail_is_refused_at_create_naming_what_is_missing()
    {
        var dir = Directory.CreateTempSubdirectory("ka-rtc-").FullName;
        try
        {
            var options = new AgentOptions { DataDir = dir, AllowedRuntimeClasses = ["kata", "kata-clh", "gvisor", "runc"], DefaultRuntimeClass = "runc" };
            var registry = await RuntimeClassRegistry.CreateAsync(options);
            Assert.Equal(RuntimeClassTable.All.Select(d => d.Name), registry.All.Select(s => s.Definition.Name));
            var clh = registry.Known("kata-clh");
            Assert.Equal(options.Resources.KataVmOverheadBytes, clh.OverheadBytes);
            Assert.Equal(0, registry.Known("gvisor").OverheadBytes);
            if (clh.Usable)
                return; // A Kata host with Cloud Hypervisor: nothing to refuse.
            var e = Assert.Throws<InvalidOperationException>(() => registry.Resolve("kata-clh"));
            Assert.Contains("runtime class 'kata-clh' cannot run on this host", e.Message, StringComparison.Ordinal);
            Assert.Contains(clh.Detail, e.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
