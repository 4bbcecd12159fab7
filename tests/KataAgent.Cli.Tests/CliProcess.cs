using System.Diagnostics;
using System.Text;
using KataAgent.Core;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;

// Tests start agents with private containerds, CNI bridges and real sessions: one class at a time on a 2-core machine.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace KataAgent.Cli.Tests;

public sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
}

/// <summary>Runs the kata-agent executable as a separate process.</summary>
public static class CliProcess
{
    public static ProcessStartInfo StartInfo(IEnumerable<string> args)
    {
        var apphost = Path.Combine(AppContext.BaseDirectory, "kata-agent");
        var psi = File.Exists(apphost) ? new ProcessStartInfo(apphost) : new ProcessStartInfo("dotnet") { ArgumentList = { Path.Combine(AppContext.BaseDirectory, "kata-agent.dll") } };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        psi.RedirectStandardInput = true;
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.UseShellExecute = false;
        // Only the test's own config counts.
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("KATA_AGENT_", StringComparison.Ordinal) && k != "KATA_AGENT_CACHE").ToList())
            psi.Environment.Remove(key);
        return psi;
    }

    public static async Task<CliResult> RunAsync(IEnumerable<string> args, string? stdin = null, int timeoutSeconds = 300)
    {
        using var process = Process.Start(StartInfo(args))!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
            await process.StandardInput.WriteAsync(stdin);
        process.StandardInput.Close();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutSeconds));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            throw new TimeoutException($"kata-agent {string.Join(' ', args)} did not finish within {timeoutSeconds} s; stderr: {await stderr}");
        }
        return new CliResult(process.ExitCode, await stdout, await stderr);
    }
}

/// <summary>
/// A config of its own for CLI runs: data dir under /tmp, CNI bridge/network/subnet 10.203.X.0/24 without
/// masquerading, its own port range and api socket: a <see cref="TestAgentHost"/>'s settings, written as TOML.
/// Disposal removes whatever the runs may have left.
/// </summary>
public class CliEnvironment : IAsyncLifetime
{
    // Ports 25000 + 25 * index for indexes 0-99 (25000-27499): between the API fixtures' (20000-24999) and the core
    // fixtures' (27680-30239). The indexes come from the pool every test agent shares (see TestNetwork).
    private static readonly TestNetworkPlan Plan = new("kcli", SubnetOctet: 203, PortBase: 25000, PortsPerIndex: 25, FirstIndex: 0, IndexCount: 100);

    public string Dir { get; } = Path.Combine("/tmp", "kcli-" + Guid.NewGuid().ToString("N")[..8]);
    public TestNetwork Network { get; } = TestNetwork.Take(Plan);
    public int Index => Network.Index;
    public string Name => Network.Name;
    public string DataDir => Path.Combine(Dir, "data");
    public int PortRangeStart => Network.PortRangeStart;
    public string SocketPath => Path.Combine(Dir, "api.sock");
    public string ConfigPath => Path.Combine(Dir, "kata-agent.toml");
    // What the config says, as the in-process clean-up agent runs it; the cgroup parent is one no earlier run made (named
    // after Dir, not DataDir): each environment starts from a fresh host's cgroup state.
    // (The clean-up agent keeps the default class runc: it only destroys and counts.)
    private AgentOptions AgentOptions => TestAgentHost.CommonOptions("cli-test", DataDir, "kata-agent-cli-test", Network) with
    {
        CgroupParent = "/" + Path.GetFileName(Dir),
    };
    public string CgroupParent => AgentOptions.CgroupParent;
    protected virtual string DefaultClass => "runc";

    public virtual async Task InitializeAsync()
    {
        Directory.CreateDirectory(Dir);
        var options = AgentOptions;
        await File.WriteAllTextAsync(ConfigPath, $"""
            [agent]
            id = "{options.AgentId}"
            data_dir = "{options.DataDir}"
            runner_dir = "{options.RunnerDir}"
            [containerd]
            namespace = "{options.Namespace}"
            [runtime]
            default_class = "{DefaultClass}"
            allowed_classes = [{string.Join(", ", options.AllowedRuntimeClasses.Select(c => $"\"{c}\""))}]
            cgroup_parent = "{options.CgroupParent}"
            [network]
            name = "{options.NetworkName}"
            bridge = "{options.BridgeName}"
            subnet = "{options.Subnet}"
            ip_masquerade = {(options.IpMasquerade ? "true" : "false")}
            netns_prefix = "{options.NetnsPrefix}"
            port_range_start = {options.PortRangeStart}
            port_range_end = {options.PortRangeEnd}
            [timeouts]
            runner_ready = "{options.RunnerReadyTimeout.TotalSeconds:0}s"
            stop_grace = "{options.StopGracePeriod.TotalSeconds:0}s"
            [api]
            socket = "{SocketPath}"
            [logging]
            level = "warning"
            """);
    }

    public Task<CliResult> RunAsync(params string[] args) => CliProcess.RunAsync(["--config", ConfigPath, .. args]);

    public Task<CliResult> RunWithStdinAsync(string stdin, params string[] args) => CliProcess.RunAsync(["--config", ConfigPath, .. args], stdin);

    /// <summary>Network namespaces of this environment's agent (named with its own prefix).</summary>
    public IReadOnlyList<string> Netns() => HostNetwork.NetnsNames().Where(n => n.StartsWith(Name + "-", StringComparison.Ordinal)).ToList();

    public IReadOnlyList<(int Pid, string CommandLine)> ProcessesOfThisEnvironment() =>
        ProcessTable.All().Where(p => p.CommandLine.Contains(Dir, StringComparison.Ordinal) && p.Pid != Environment.ProcessId).ToList();

    /// <summary>What this environment's runs left behind, counted by a fresh agent on its data dir (no agent may hold it).</summary>
    public async Task<AgentLeakCensus> CensusAsync()
    {
        await using var agent = await Agent.StartAsync(AgentOptions, NullLoggerFactory.Instance);
        return await AgentLeakCensus.TakeAsync(agent);
    }

    public virtual async Task DisposeAsync()
    {
        // kata-agent processes first (their containerds and shims stay for the clean-up agent to adopt): a serve or run
        // still holding the data dir would keep the clean-up agent out.
        foreach (var (pid, _) in ProcessesOfThisEnvironment().Where(p => p.CommandLine.Contains(ConfigPath, StringComparison.Ordinal)))
            ProcessTable.Kill(pid, 9);
        // Whatever a failed test left: sessions (recovered by a fresh agent on the same data dir), containerds, the bridge.
        if (Directory.Exists(Path.Combine(DataDir, "state")))
        {
            try
            {
                await using var agent = await Agent.StartAsync(AgentOptions, NullLoggerFactory.Instance);
                foreach (var session in agent.Sessions)
                    await agent.DestroySessionAsync(session.KernelId);
                await Reaper.ReapNamespaceAsync(agent.Containerd, CancellationToken.None);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Console.Error.WriteLine($"cleanup of {Dir}: {e.Message}");
            }
        }
        foreach (var (pid, _) in ProcessesOfThisEnvironment())
            ProcessTable.Kill(pid, 9);
        Core.Cgroups.SessionCgroupParent.ForHost(CgroupParent).RemoveIfEmpty();
        await Network.DeleteLinkAsync();
        Mounts.UnmountAllUnder(Dir);
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
        Network.Dispose();
    }
}

internal static class Text
{
    public static int LineCount(string s) => s.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;

    public static string Utf8(byte[] b) => Encoding.UTF8.GetString(b);
}
