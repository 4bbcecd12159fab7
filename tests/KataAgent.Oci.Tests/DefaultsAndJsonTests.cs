using System.Text.Json.Nodes;
using static KataAgent.Oci.SpecOpts;

namespace KataAgent.Oci.Tests;

public class DefaultsAndJsonTests
{
    private static readonly string[] DockerCaps =
    [
        "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_MKNOD",
        "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
    ];

    [Fact]
    public void ProcessDefaults()
    {
        var process = Specs.Generate(WithProcessArgs("/bin/sh")).Process!;
        Assert.False(process.Terminal);
        Assert.True(process.NoNewPrivileges);
        Assert.Equal("/", process.Cwd);
        Assert.Equal((0u, 0u), (process.User.Uid, process.User.Gid));
        var nofile = Assert.Single(process.Rlimits!);
        Assert.Equal(("RLIMIT_NOFILE", 1_048_576UL, 1_048_576UL), (nofile.Type, nofile.Soft, nofile.Hard));
        Assert.Equal(DockerCaps, process.Capabilities!.Bounding!.Order(StringComparer.Ordinal));
        Assert.Equal(process.Capabilities.Bounding, process.Capabilities.Effective);
        Assert.Equal(process.Capabilities.Bounding, process.Capabilities.Permitted);
        Assert.Null(process.Capabilities.Inheritable);
    }

    [Fact]
    public void DefaultMounts()
    {
        var mounts = Specs.Generate(WithProcessArgs("/bin/sh")).Mounts!.ToDictionary(m => m.Destination);
        Assert.Equal(["/dev", "/dev/mqueue", "/dev/pts", "/dev/shm", "/proc", "/sys", "/sys/fs/cgroup"], mounts.Keys.Order(StringComparer.Ordinal));
        Assert.Equal("proc", mounts["/proc"].Type);
        Assert.Contains("ro", mounts["/sys"].Options!);
        Assert.Contains("ro", mounts["/sys/fs/cgroup"].Options!);
        Assert.Equal("cgroup", mounts["/sys/fs/cgroup"].Type);
        Assert.Equal("devpts", mounts["/dev/pts"].Type);
        Assert.Contains("size=67108864", mounts["/dev/shm"].Options!);
    }

    [Fact]
    public void DevShmSizeReplacesTheSizeOption()
    {
        var shm = Specs.Generate(WithProcessArgs("/bin/sh"), WithDevShmSize(1L << 30)).Mounts!.Single(m => m.Destination == "/dev/shm");
        Assert.Single(shm.Options!, o => o.StartsWith("size=", StringComparison.Ordinal));
        Assert.Contains("size=1073741824", shm.Options!);
    }

    [Fact]
    public void BindMountShape()
    {
        var spec = Specs.Generate(WithProcessArgs("/bin/sh"), WithBindMount("/host/work", "/home/work", false), WithBindMount("/host/runner", "/opt/runner", true, recursive: false));
        var work = spec.Mounts!.Single(m => m.Destination == "/home/work");
        Assert.Equal(("bind", "/host/work"), (work.Type, work.Source));
        Assert.Equal(["rbind", "rprivate", "rw"], work.Options!.Take(3));
        var runner = spec.Mounts!.Single(m => m.Destination == "/opt/runner");
        Assert.Equal(["bind", "rprivate", "ro"], runner.Options!.Take(3));
    }

    [Fact]
    public void DeviceAllowlistDeniesAllFirst()
    {
        var devices = Specs.Generate(WithProcessArgs("/bin/sh")).Linux!.Resources!.Devices!;
        Assert.False(devices[0].Allow);
        Assert.Equal("rwm", devices[0].Access);
        Assert.Null(devices[0].Type);
        Assert.Contains(devices, d => d.Allow && d.Type == "c" && d.Major == 1 && d.Minor == 3);   // null
        Assert.Contains(devices, d => d.Allow && d.Type == "c" && d.Major == 136 && d.Minor is null); // pts
        Assert.DoesNotContain(devices, d => d.Allow && d.Type == "b" && d.Access!.Contains('r', StringComparison.Ordinal));
    }

    [Fact]
    public void MaskedAndReadonlyPathsLikeDocker()
    {
        var linux = Specs.Generate(WithProcessArgs("/bin/sh"), WithMaskedPaths("/proc/extra")).Linux!;
        Assert.Contains("/proc/kcore", linux.MaskedPaths!);
        Assert.Contains("/sys/firmware", linux.MaskedPaths!);
        Assert.Contains("/proc/extra", linux.MaskedPaths!);
        Assert.Contains("/proc/sysrq-trigger", linux.ReadonlyPaths!);
        Assert.Contains("/proc/sys", linux.ReadonlyPaths!);
    }

    [Fact]
    public void ResourcesFromOptions()
    {
        var spec = Specs.Generate(TestSpecs.Full());
        var cpu = spec.Linux!.Resources!.Cpu!;
        Assert.Equal((200_000L, 100_000UL, 2048UL, "0-1", "0"), (cpu.Quota!.Value, cpu.Period!.Value, cpu.Shares!.Value, cpu.Cpus, cpu.Mems));
        Assert.Equal(4096, spec.Linux.Resources.Pids!.Limit);
        Assert.Equal("/kata-agent/sess-1", spec.Linux.CgroupsPath);
        Assert.Equal(150_000L, Specs.Generate(WithProcessArgs("/bin/sh"), WithCpus(1.5)).Linux!.Resources!.Cpu!.Quota);
    }

    [Fact]
    public void NetworkNamespacePathReplacesTheNewNamespaceInPlace()
    {
        var namespaces = Specs.Generate(WithProcessArgs("/bin/sh"), WithNetworkNamespacePath("/run/netns/a"), WithNetworkNamespacePath("/run/netns/b")).Linux!.Namespaces!;
        var net = Assert.Single(namespaces, n => n.Type == "network");
        Assert.Equal("/run/netns/b", net.Path);
        Assert.Equal(6, namespaces.Count);
    }

    [Fact]
    public void JsonIsCamelCaseAndOmitsNulls()
    {
        var json = Specs.ToJson(Specs.Generate(TestSpecs.Full()));
        var node = JsonNode.Parse(json)!;
        Assert.NotNull(node["ociVersion"]);
        Assert.NotNull(node["process"]!["noNewPrivileges"]);
        Assert.NotNull(node["linux"]!["cgroupsPath"]);
        Assert.NotNull(node["linux"]!["maskedPaths"]);
        Assert.NotNull(node["linux"]!["readonlyPaths"]);
        Assert.Null(node["process"]!["oomScoreAdj"]);
        Assert.Null(node["process"]!["user"]!["additionalGids"]);
        Assert.DoesNotContain("null", json, StringComparison.Ordinal);
        Assert.DoesNotContain("\"OciVersion\"", json, StringComparison.Ordinal);
        Assert.DoesNotContain("SeccompIsDefault", json, StringComparison.Ordinal);
    }

    [Fact]
    public void JsonRoundTrips()
    {
        var json = Specs.ToJson(Specs.Generate(TestSpecs.Full()));
        Assert.Equal(json, Specs.ToJson(Specs.FromJson(json)));
        Assert.Equal(json, Specs.ToJson(Specs.FromJson(Specs.ToUtf8Json(Specs.FromJson(json)))));
        Assert.Contains("\n", Specs.ToJson(Specs.FromJson(json), indented: true), StringComparison.Ordinal);
    }

    [Fact]
    public void AnnotationsAddAndReplace()
    {
        var spec = Specs.Generate(WithProcessArgs("/bin/sh"), WithAnnotation("a", "1"), WithAnnotations([new("a", "2"), new("b", "3")]));
        Assert.Equal(new Dictionary<string, string> { ["a"] = "2", ["b"] = "3" }, spec.Annotations);
    }

    [Fact]
    public void RootfsOptions()
    {
        var root = Specs.Generate(WithProcessArgs("/bin/sh"), WithReadonlyRootfs(), WithRootfsPath("/run/bundle/rootfs")).Root!;
        Assert.Equal(("/run/bundle/rootfs", true), (root.Path, root.Readonly!.Value));
        Assert.Equal("rootfs", Specs.Generate(WithProcessArgs("/bin/sh")).Root!.Path);
    }
}
