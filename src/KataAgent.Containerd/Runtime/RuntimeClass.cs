using Google.Protobuf.WellKnownTypes;

namespace KataAgent.Containerd.Runtime;

/// <summary>What isolates a runtime's containers from the host kernel.</summary>
public enum RuntimeKind
{
    /// <summary>Linux namespaces only: the container shares the host kernel (runc).</summary>
    SharedKernel,
    /// <summary>A user-space kernel between the container and the host (gVisor).</summary>
    UserSpaceKernel,
    /// <summary>A virtual machine per container, with its own guest kernel (Kata): it costs host memory beyond the guest.</summary>
    Vm,
}

/// <summary>
/// How a session's container is run: which containerd runtime (shim), which options it gets, and what kind of
/// isolation that is. A native client gets none of containerd's CRI runtime config, so the options travel on the
/// container record itself. The agent's runtime classes are built from one table (Core/Runtime/RuntimeClassTable.cs);
/// the factories here say how each kind of runtime is spelled to containerd.
/// </summary>
public sealed record RuntimeClass(string Name, string RuntimeType, Any? Options, RuntimeKind Kind, string Description)
{
    public const string KataRuntimeType = "io.containerd.kata.v2";
    public const string RuncRuntimeType = "io.containerd.runc.v2";

    /// <summary>A VM per container: its task pid is the hypervisor's, and the VM costs host memory beyond the guest.</summary>
    public bool IsVm => Kind == RuntimeKind.Vm;

    /// <summary>Whether untrusted code is kept off the host kernel (everything but runc).</summary>
    public bool IsolatesKernel => Kind != RuntimeKind.SharedKernel;

    /// <summary>Namespaces only: development use, no isolation from the host kernel.</summary>
    public static RuntimeClass Runc(string name = "runc") =>
        new(name, RuncRuntimeType, TypeUrls.Pack(new global::Containerd.Runc.V1.Options()), RuntimeKind.SharedKernel,
            "runc: Linux namespaces only, shares the host kernel");

    /// <summary>gVisor through the runc v2 shim: the shim runs our wrapper instead of runc.</summary>
    public static RuntimeClass Gvisor(string wrapperPath, string name = "gvisor") =>
        new(name, RuncRuntimeType,
            TypeUrls.Pack(new global::Containerd.Runc.V1.Options { BinaryName = wrapperPath, Root = "/run/kata-agent/runsc" }),
            RuntimeKind.UserSpaceKernel, "gVisor (runsc): user-space kernel sandbox");

    /// <summary>
    /// Kata Containers: a microVM per session. The config path picks the hypervisor configuration (QEMU, Cloud
    /// Hypervisor, ...); empty leaves the choice to the host's default. Every Kata flavour uses the one shim
    /// (io.containerd.kata.v2): kata-deploy's io.containerd.kata-&lt;shim&gt;.v2 handler names have no binary of their
    /// own, so a native client names the shim and passes the config path (kata-notes §1).
    /// </summary>
    public static RuntimeClass Kata(string? configPath = null, string name = "kata",
        string description = "Kata Containers: a lightweight VM per session") =>
        new(name, KataRuntimeType,
            string.IsNullOrEmpty(configPath) ? null : TypeUrls.Pack(new global::Runtimeoptions.V1.Options { ConfigPath = configPath }),
            RuntimeKind.Vm, description);
}
