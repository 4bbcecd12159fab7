using System.Globalization;
using KataAgent.Containerd.Runtime;
using KataAgent.Core.Scratch;
using KataAgent.Oci;

namespace KataAgent.Core.Sessions;

public sealed record SessionSpecInputs(SessionRecord Record, SessionRequest Request, string WorkPath, string ConfigPath,
    RuntimeClass Runtime, AgentOptions Options)
{
    /// <summary>The container process's environment: the request's, plus what the image's labels add (core counts).</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = Request.Environment;

    public string CgroupsPath => $"/{string.Join('/', Cgroups.SessionCgroupParent.ParsePath(Options.CgroupParent))}/{Record.KernelId}";
}

/// <summary>The spec options that make a container a session: runner, scratch, network, limits, and what the runtime class adds (for Kata the VM size).</summary>
public static class SessionSpec
{
    /// <summary>The session's resolv.conf in its config dir, bind-mounted read-only over /etc/resolv.conf.</summary>
    public const string ResolvConfName = "resolv.conf";

    public const string KataAnnotationPrefix = "io.katacontainers.config.hypervisor.";

    /// <summary>
    /// Docker's default capabilities that a session does not get unless its request adds them (and
    /// agent.allowed_capabilities allows it), as in a restricted pod: CAP_NET_RAW forges frames and reaches past L3
    /// filters; CAP_MKNOD makes device nodes (in the shared scratch dir, too); CAP_SETFCAP gives files capabilities.
    /// </summary>
    public static readonly string[] WithheldCapabilities = ["CAP_NET_RAW", "CAP_MKNOD", "CAP_SETFCAP"];

    /// <summary>
    /// Memory plus swap = the memory limit, so a session cannot page out past its limit; only where the host accounts
    /// swap (a runtime would refuse a limit the cgroup cannot take). Not for a VM (Kata): the guest kernel has no swap
    /// device unless the Kata config adds one, and the VM's memory is the bound.
    /// </summary>
    private static long? SwapLimit(SessionSpecInputs inputs) =>
        !inputs.Runtime.IsVm && Cgroups.SwapAccounting.OnHost
            ? inputs.Record.MemoryBytes
            : null;

    /// <summary>The session's process: the agent's runner, or the image's own runner command the record names.</summary>
    public static IReadOnlyList<string> ProcessArgs(SessionRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        return record.RunnerCommand ?? [SessionCreator.RunnerBinary];
    }

    public static IReadOnlyList<SpecOpt> Options(SessionSpecInputs inputs)
    {
        var (record, request, options) = (inputs.Record, inputs.Request, inputs.Options);
        var kernelId = record.KernelId;
        var opts = new List<SpecOpt>
        {
            SpecOpts.WithProcessArgs([.. ProcessArgs(record)]),
            SpecOpts.WithProcessCwd(ScratchDirectory.GuestWorkPath),
            SpecOpts.WithEnv(inputs.Environment.Select(kv => $"{kv.Key}={kv.Value}").ToArray()),
            SpecOpts.WithHostname(kernelId.Length > 12 ? kernelId[..12] : kernelId),
            SpecOpts.WithNetworkNamespacePath(record.NetnsPath),
            SpecOpts.WithBindMount(inputs.WorkPath, ScratchDirectory.GuestWorkPath, readOnly: false),
            SpecOpts.WithBindMount(inputs.ConfigPath, ScratchDirectory.GuestConfigPath, readOnly: true),
            SpecOpts.WithBindMount(options.RunnerDir, SessionCreator.RunnerMountPath, readOnly: true),
            SpecOpts.WithCpus(record.Cpus),
            SpecOpts.WithMemoryLimit(record.MemoryBytes, SwapLimit(inputs)),
            SpecOpts.WithDevShmSize(record.ShmBytes),
            SpecOpts.WithPidsLimit(options.Resources.PidsLimit),
            SpecOpts.WithCgroupsPath(inputs.CgroupsPath),
            SpecOpts.WithBindMount(Path.Combine(inputs.ConfigPath, ResolvConfName), "/etc/resolv.conf", readOnly: true),
            SpecOpts.WithDroppedCapabilities(WithheldCapabilities),
        };
        if (request.AddCapabilities.Count > 0)
            opts.Add(SpecOpts.WithAddedCapabilities([.. request.AddCapabilities]));
        if (!string.IsNullOrEmpty(record.CpuSet))
            opts.Add(SpecOpts.WithCpuset(record.CpuSet));
        opts.AddRange(request.Mounts.Select(m => SpecOpts.WithBindMount(m.HostPath, m.ContainerPath, m.ReadOnly)));
        // What only this runtime class adds (Kata: the VM sizing annotations), from its runtime-class table entry.
        opts.AddRange(Runtime.RuntimeClassTable.Get(inputs.Runtime.Name).SpecOptions(inputs));
        return opts;
    }

    /// <summary>
    /// Boot-time VM size from the allocation plus headroom. Kata's stock configs reject these
    /// annotations unless the host's enable_annotations allows them, so only the configured ones go in.
    /// </summary>
    public static IEnumerable<SpecOpt> KataSizing(SessionRecord record, KataOptions kata)
    {
        if (!kata.SizingAnnotations)
            yield break;
        var allowed = kata.AllowedAnnotations.ToHashSet(StringComparer.Ordinal);
        if (allowed.Contains("default_vcpus"))
        {
            var vcpus = Math.Ceiling(record.Cpus + kata.HeadroomCpus);
            yield return SpecOpts.WithAnnotation(KataAnnotationPrefix + "default_vcpus", vcpus.ToString("0", CultureInfo.InvariantCulture));
        }
        if (allowed.Contains("default_memory"))
        {
            // Kata refuses less than 256 MiB.
            var mib = Math.Max(256, (record.MemoryBytes + kata.HeadroomMemoryBytes + (1L << 20) - 1) >> 20);
            yield return SpecOpts.WithAnnotation(KataAnnotationPrefix + "default_memory", mib.ToString(CultureInfo.InvariantCulture));
        }
    }
}
