using System.CommandLine;
using KataAgent.Cli.Config;
using KataAgent.Core;
using KataAgent.Core.Runtime;
using Spectre.Console;

namespace KataAgent.Cli.Commands;

/// <summary>`kata-agent doctor`: is this host ready, per runtime class, and what to do if not.</summary>
internal static class DoctorCommand
{
    private const long MinFreeBytes = 5L << 30;

    /// <summary>Exit bit: something every session needs is missing.</summary>
    internal const int CommonBit = 8;
    /// <summary>Exit bit: guest-written files are not harmless on the host.</summary>
    internal const int HardeningBit = 16;
    /// <summary>Exit bit: [backendai] is set but etcd, Redis or the RPC port is not usable.</summary>
    internal const int BackendAiBit = 64; // 32 is kata-clh's (RuntimeClassTable)

    internal sealed record Check(string Area, string Name, bool Ok, string Detail);

    /// <summary>
    /// The exit-code mapping, as the help prints it: one bit per runtime class (its DoctorExitBit in the runtime-class
    /// table) plus doctor's own two.
    /// </summary>
    internal static string ExitCodeHelp() =>
        "Exit code: 0 when everything is usable; otherwise the sum of " +
        string.Join(", ", RuntimeClassTable.All.OrderBy(d => d.DoctorExitBit).Select(d => $"{d.DoctorExitBit} ({d.Name} unusable)")) + ",\n" +
        $"{CommonBit} (something every session needs is missing), {HardeningBit} (guest-written files are not harmless on the\n" +
        "host: data dir not 0700, or a running agent's scratch root not mounted nosuid,nodev) and " + $"{BackendAiBit} ([backendai] is set\n" +
        "but etcd, the manager's Redis or the RPC port is not usable). The runtime-class bits are\n" +
        "each class's DoctorExitBit in src/KataAgent.Core/Runtime/RuntimeClassTable.cs (docs/RUNTIME_CLASSES.md).";

    public static Command Create()
    {
        var command = new Command("doctor", $"""
            Check this host: each runtime class ({RuntimeClassTable.Names}), containerd, CNI plugins, cgroups, iptables, the runner, free space.
            {ExitCodeHelp()}
            Warns loudly when runc is the only allowed runtime class (runtime.allowed_classes) that works here.

            Examples:
              kata-agent doctor
              kata-agent doctor --json
            """);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            var config = new GlobalSettings(parse).LoadConfig();
            var checks = Run(config.Agent);
            checks.Add(await GuardCheckAsync(config.Agent, ct));
            if (config.BackendAi is { } backendAi)
                checks.AddRange(await BackendAiChecks.RunAsync(backendAi, ct));
            var exit = ExitCode(checks);
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(new
                {
                    checks,
                    usable = Usable(exit),
                    allowedClasses = config.Agent.AllowedRuntimeClasses,
                    warning = RuncOnlyWarning(config.Agent, exit),
                });
                if (RuncOnlyWarning(config.Agent, exit) is { } warning)
                    Output.Warn(warning);
                return exit;
            }
            var table = new Table().Border(TableBorder.Simple).AddColumn("AREA").AddColumn("CHECK").AddColumn("OK").AddColumn("DETAIL");
            foreach (var c in checks)
                table.AddRow(Markup.Escape(c.Area), Markup.Escape(c.Name), c.Ok ? "[green]ok[/]" : "[red]no[/]", Markup.Escape(c.Detail));
            Output.Out.Write(table);
            foreach (var d in RuntimeClassTable.All)
                Output.Out.MarkupLine((exit & d.DoctorExitBit) == 0 ? $"[green]{d.Name}: usable[/]" : $"[red]{d.Name}: not usable[/]");
            if ((exit & CommonBit) != 0)
                Output.Out.MarkupLine("[red]common prerequisites are missing: no session can start until they are fixed[/]");
            if ((exit & HardeningBit) != 0)
                Output.Out.MarkupLine("[red]host hardening is incomplete: what a guest writes may be usable on this host[/]");
            if (RuncOnlyWarning(config.Agent, exit) is { } runcOnly)
                Output.Warn(runcOnly);
            return exit;
        });
        return command;
    }

    /// <summary>Per runtime class (and "common"): usable or not, as the exit code says.</summary>
    internal static Dictionary<string, bool> Usable(int exit)
    {
        var usable = RuntimeClassTable.All.ToDictionary(d => d.Name, d => (exit & d.DoctorExitBit) == 0, StringComparer.Ordinal);
        usable["common"] = (exit & CommonBit) == 0;
        return usable;
    }

    /// <summary>Loud when, of the classes sessions may use (runtime.allowed_classes), runc is the only one this host can run.</summary>
    internal static string? RuncOnlyWarning(AgentOptions options, int exit)
    {
        var usable = options.AllowedRuntimeClasses.Where(c => RuntimeClassTable.Find(c) is { } d && (exit & d.DoctorExitBit) == 0).ToList();
        return usable is [var only] && !RuntimeClassTable.Get(only).IsolatesKernel
            ? $"WARNING: {only} is the only allowed runtime class that works here (runtime.allowed_classes: " +
              string.Join(", ", options.AllowedRuntimeClasses) + "): it does not isolate untrusted code from the host kernel; use it for development only"
            : null;
    }

    /// <summary>Each runtime class's checks are in the area named after it; a failing one sets the class's bit.</summary>
    internal static int ExitCode(IReadOnlyList<Check> checks)
    {
        var exit = 0;
        foreach (var d in RuntimeClassTable.All.Where(d => checks.Any(c => c.Area == d.Name && !c.Ok)))
            exit |= d.DoctorExitBit;
        if (checks.Any(c => c.Area == "common" && !c.Ok)) exit |= CommonBit;
        if (checks.Any(c => c.Area == "hardening" && !c.Ok)) exit |= HardeningBit;
        if (checks.Any(c => c.Area == BackendAiChecks.Area && !c.Ok)) exit |= BackendAiBit;
        return exit;
    }

    internal static List<Check> Run(AgentOptions options)
    {
        var checks = new List<Check>();
        void Add(string area, IEnumerable<HostCheck> hostChecks) => checks.AddRange(hostChecks.Select(h => new Check(area, h.Name, h.Ok, h.Detail)));
        foreach (var d in RuntimeClassTable.All)
            Add(d.Name, d.HostChecks(options));

        checks.Add(new Check("common", "root", Environment.IsPrivilegedProcess, Environment.IsPrivilegedProcess
            ? "running as root" : "not root: the agent drives containerd, network namespaces and iptables; run it as root"));
        if (options.ContainerdAddress is { Length: > 0 } address)
        {
            checks.Add(new Check("common", "containerd", File.Exists(address), File.Exists(address) ? address : $"{address} does not exist: is containerd running?"));
        }
        else
        {
            var binary = HostChecks.Executable("containerd", "install the Debian package 'containerd'");
            checks.Add(new Check("common", "containerd", binary.Ok, binary.Ok ? $"{binary.Detail} (the agent starts a private one)" : binary.Detail));
        }
        foreach (var plugin in new[] { "bridge", "host-local", "portmap", "firewall", "loopback" })
        {
            var path = Path.Combine(options.CniPluginDir, plugin);
            checks.Add(new Check("common", $"cni {plugin}", File.Exists(path), File.Exists(path) ? path
                : $"{path} missing: install the Debian package 'containernetworking-plugins' or set network.cni_plugin_dir"));
        }
        checks.Add(CgroupCheck());
        var iptables = HostChecks.Executable("iptables", "install the Debian package 'iptables'");
        checks.Add(new Check("common", "iptables", iptables.Ok, iptables.Detail));
        var runner = Path.Combine(options.RunnerDir, "kata-runner");
        checks.Add(new Check("common", "kernel runner", File.Exists(runner), File.Exists(runner) ? runner
            : $"{runner} missing: run scripts/publish-runner.sh (scripts/setup.sh does) or set agent.runner_dir"));
        checks.Add(FreeSpaceCheck(options.DataDir));
        checks.Add(AllowedClassesCheck(options));
        Add("hardening", Core.HostDirectories.HostHardeningChecks.Run(options));
        return checks;
    }

    /// <summary>Which runtime classes requests may use (runc only when listed).</summary>
    private static Check AllowedClassesCheck(AgentOptions options)
    {
        var unsandboxed = options.AllowedRuntimeClasses.Where(c => RuntimeClassTable.Find(c) is { IsolatesKernel: false }).ToList();
        return new("common", "allowed runtime classes", true, string.Join(", ", options.AllowedRuntimeClasses) +
            (unsandboxed.Count > 0 ? $" ({string.Join(", ", unsandboxed)}: development only)" : " (runtime.allowed_classes)"));
    }

    /// <summary>The kernel takes the guard's tables (checked with `nft -c`, which changes nothing), and whether they are up.</summary>
    private static async Task<Check> GuardCheckAsync(Core.AgentOptions options, CancellationToken cancellationToken)
    {
        const string name = "network guard (nftables)";
        var nft = HostChecks.Executable("nft", "install the Debian package 'nftables'");
        if (!nft.Ok)
            return new Check("common", name, false, nft.Detail + ": sessions would not be isolated from each other and the host");
        var guard = new Network.Isolation.NetworkGuard(new Network.Isolation.NetworkGuardOptions { BridgeName = options.BridgeName, Subnet = options.Subnet, DenyCidrs = options.DenyCidrs });
        if (await guard.ValidateAsync(cancellationToken) is { } problem)
            return new Check("common", name, false, $"the kernel refuses the guard's tables: {problem}");
        return new Check("common", name, true, await guard.ExistsAsync(cancellationToken)
            ? $"tables {guard.TableName} (inet, bridge) in place"
            : $"tables {guard.TableName} accepted by the kernel; an agent creates them at start");
    }

    private static Check CgroupCheck()
    {
        if (File.Exists("/sys/fs/cgroup/cgroup.controllers"))
            return new Check("common", "cgroups", true, "v2 (unified)");
        if (Directory.Exists("/sys/fs/cgroup/memory") || Directory.Exists("/sys/fs/cgroup/cpu,cpuacct"))
            return new Check("common", "cgroups", true, Directory.Exists("/sys/fs/cgroup/unified") ? "v1 (hybrid, with a v2 mount at /sys/fs/cgroup/unified)" : "v1");
        return new Check("common", "cgroups", false, "no cgroup hierarchy under /sys/fs/cgroup: mount cgroup2 (or the v1 controllers)");
    }

    private static Check FreeSpaceCheck(string dataDir)
    {
        var dir = dataDir;
        while (!Directory.Exists(dir) && Path.GetDirectoryName(dir) is { } parent)
            dir = parent;
        try
        {
            var free = new DriveInfo(dir).AvailableFreeSpace;
            return new Check("common", "free space", free >= MinFreeBytes, $"{Sizes.Format(free)} free under {dataDir}" +
                (free >= MinFreeBytes ? "" : $": images and sessions need at least {Sizes.Format(MinFreeBytes)}"));
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            return new Check("common", "free space", false, $"cannot tell for {dataDir}: {e.Message}");
        }
    }
}
