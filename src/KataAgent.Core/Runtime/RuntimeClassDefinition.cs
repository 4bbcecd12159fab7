using KataAgent.Containerd.Runtime;
using KataAgent.Core.Sessions;
using KataAgent.Oci;

namespace KataAgent.Core.Runtime;

/// <summary>What a runtime class is built from on this host: the agent's options and the gVisor wrapper it wrote.</summary>
public sealed record RuntimeClassSettings(AgentOptions Options, string GvisorWrapperPath);

/// <summary>
/// One runtime class, as data: everything the agent, doctor and the config loader need to know about it. The classes
/// are the entries of <see cref="RuntimeClassTable"/>; nothing else lists them.
/// </summary>
public sealed record RuntimeClassDefinition
{
    /// <summary>What requests, config (runtime.default_class, runtime.allowed_classes) and doctor call it.</summary>
    public required string Name { get; init; }

    /// <summary>VM, user-space kernel or shared kernel: what every "is this a VM?" question asks.</summary>
    public required RuntimeKind Kind { get; init; }

    /// <summary>One line for doctor, the example config and the docs.</summary>
    public required string Description { get; init; }

    /// <summary>
    /// The bit `kata-agent doctor` adds to its exit code when this class is unusable: a power of two, unique, and
    /// clear of doctor's own bits (8: common prerequisites, 16: host hardening). Existing values never change.
    /// </summary>
    public required int DoctorExitBit { get; init; }

    /// <summary>The containerd runtime (shim type and options) for this host; its name and kind must be this entry's.</summary>
    public required Func<RuntimeClassDefinition, RuntimeClassSettings, RuntimeClass> Runtime { get; init; }

    /// <summary>What this host needs for the class; any failure makes the class unusable (doctor reports it, create refuses it).</summary>
    public required Func<RuntimeClassDefinition, AgentOptions, IReadOnlyList<HostCheck>> Checks { get; init; }

    /// <summary>Spec options only this class gets, added after the common session options (e.g. Kata's VM sizing annotations).</summary>
    public Func<SessionSpecInputs, IEnumerable<SpecOpt>> SpecOptions { get; init; } = _ => [];

    /// <summary>Host memory a session of this class costs beyond its own allocation (a VM's shim + VMM + virtiofsd).</summary>
    public Func<AgentOptions, long> OverheadBytes { get; init; } = _ => 0;

    /// <summary>
    /// The [runtime] config key naming this class's configuration file (Kata flavours), or null when the class takes
    /// none. The loader makes a key of it; an empty value means <see cref="DefaultConfigPath"/>.
    /// </summary>
    public string? ConfigPathKey { get; init; }

    /// <summary>The configuration file used when the config does not name one; empty: the runtime's own default.</summary>
    public string DefaultConfigPath { get; init; } = "";

    public bool IsVm => Kind == RuntimeKind.Vm;

    /// <summary>Runs this class's host checks under these options.</summary>
    public IReadOnlyList<HostCheck> HostChecks(AgentOptions options) => Checks(this, options);

    /// <summary>False only for runc: sessions share the host kernel (development only, never a fallback).</summary>
    public bool IsolatesKernel => Kind != RuntimeKind.SharedKernel;

    /// <summary>This class's configuration file under these options (the configured one, else the default).</summary>
    public string ConfigPath(AgentOptions options) =>
        options.RuntimeConfigPaths.TryGetValue(Name, out var path) && path.Length > 0 ? path : DefaultConfigPath;

    /// <summary>The containerd runtime for this host, checked against the entry (a factory of another kind is a table bug).</summary>
    public RuntimeClass BuildRuntime(RuntimeClassSettings settings)
    {
        var runtime = Runtime(this, settings);
        if (runtime.Name != Name || runtime.Kind != Kind)
            throw new InvalidOperationException($"runtime class table: entry '{Name}' ({Kind}) builds runtime '{runtime.Name}' ({runtime.Kind})");
        return runtime with { Description = Description };
    }
}
