using static KataAgent.Oci.SpecOpts;

namespace KataAgent.Oci.Tests;

internal static class TestSpecs
{
    /// <summary>Roughly what a session's container gets.</summary>
    public static SpecOpt Full() => Compose(
        WithProcessArgs("/opt/kernel/runner", "--port", "2000"),
        WithEnv("LANG=C.UTF-8", "HOME=/home/work"),
        WithProcessCwd("/home/work"),
        WithUidGid(1000, 1000),
        WithHostname("sess-1"),
        WithNetworkNamespacePath("/var/run/netns/sess-1"),
        WithCpus(2),
        WithCpuShares(2048),
        WithCpuset("0-1", "0"),
        WithMemoryLimit(2L * 1024 * 1024 * 1024, 2L * 1024 * 1024 * 1024),
        WithPidsLimit(4096),
        WithCgroupsPath("/kata-agent/sess-1"),
        WithDevShmSize(256L << 20),
        WithBindMount("/var/lib/kata-agent/scratch/sess-1/work", "/home/work", readOnly: false),
        WithBindMount("/var/lib/kata-agent/scratch/sess-1/config", "/home/config", readOnly: true),
        WithBindMount("/usr/lib/kata-agent/runner", "/opt/kernel", readOnly: true),
        WithRlimit("RLIMIT_NPROC", 8192, 8192),
        WithSysctl("net.ipv4.ip_unprivileged_port_start", "0"),
        WithDefaultSeccomp(),
        WithAnnotation("ai.example/session", "v1"));

    public static ImageConfig PythonImage() => ImageConfig.Parse("""
        {
          "architecture": "amd64",
          "os": "linux",
          "created": "2024-05-01T10:00:00Z",
          "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "PYTHONUNBUFFERED=1"],
            "Entrypoint": ["/usr/bin/tini", "--"],
            "Cmd": ["python3"],
            "WorkingDir": "/srv",
            "Labels": {"ai.backend.kernelspec": "1", "maintainer": "someone"},
            "ExposedPorts": {"8888/tcp": {}},
            "StopSignal": "SIGINT"
          },
          "rootfs": {"type": "layers", "diff_ids": ["sha256:aaaa", "sha256:bbbb"]},
          "history": [{"created": "2024-05-01T10:00:00Z", "created_by": "ADD rootfs.tar /", "empty_layer": false}]
        }
        """);
}
