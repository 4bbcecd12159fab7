using Google.Protobuf.WellKnownTypes;

namespace KataAgent.Containerd.Runtime;

/// <summary>
/// How a session's container is run: which containerd runtime (shim) and which options it gets.
/// A native client gets none of containerd's CRI runtime config, so the options travel on the
/// container record itself.
/// </summary>
public sealed record RuntimeClass(string Name, string RuntimeType, Any? Options, bool IsolatesKernel, string Description)
{
    public const string KataRuntimeType = "io.containerd.kata.v2";
    public const string RuncRuntimeType = "io.containerd.runc.v2";

    /// <summary>Namespaces only: development use, no isolation from the host kernel.</summary>
    public static RuntimeClass Runc(string name = "runc") =>
        new(name, RuncRuntimeType, TypeUrls.Pack(new global::Containerd.Runc.V1.Options()), IsolatesKernel: false,
            "runc: Linux namespaces only, shares the host kernel");

    /// <summary>gVisor through the runc v2 shim: the shim runs our wrapper instead of runc.</summary>
    public static RuntimeClass Gvisor(string wrapperPath, string name = "gvisor") =>
        new(name, RuncRuntimeType,
            TypeUrls.Pack(new global::Containerd.Runc.V1.Options { BinaryName = wrapperPath, Root = "/run/kata-agent/runsc" }),
            IsolatesKernel: true, "gVisor (runsc): user-space kernel sandbox");

    /// <summary>
    /// Kata Containers: a microVM per session. An empty config path leaves the choice of
    /// hypervisor configuration to the host's default.
    /// </summary>
    public static RuntimeClass Kata(string? configPath = null, string name = "kata") =>
        new(name, KataRuntimeType,
            string.IsNullOrEmpty(configPath) ? null : TypeUrls.Pack(new global::Runtimeoptions.V1.Options { ConfigPath = configPath }),
            IsolatesKernel: true, "Kata Containers: a lightweight VM per session");
}
