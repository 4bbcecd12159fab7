using System.Diagnostics;
using System.Globalization;
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
/// masquerading, its own port range and api socket. Disposal removes whatever the runs may have left.
/// </summary>
public class CliEnvironment : IAsyncLifetime
{
    private static int _instances;

    public string Dir { get; } = Path.Combine("/tmp", "kcli-" + Guid.NewGuid().ToString("N")[..8]);
    // Skips indexes whose bridge exists: another copy of these tests (a CI run beside a developer's) may hold it.
    public int Index { get; } = FreeIndex("kcli", (Environment.ProcessId % 50) * 4 + Interlocked.Increment(ref _instances) % 4);
    public string Name => "kcli" + Index.ToString(CultureInfo.InvariantCulture);
    public string DataDir => Path.Combine(Dir, "data");
    // Below the kernel's ephemeral range (32768+): a published port there can capture (DNAT) an unrelated loopback
    // connection that got the same ephemeral port, e.g. NetMQ's internal signaler pair, which then hangs.
    public int PortRangeStart => 25000 + Index * 25;
    public string SocketPath => Path.Combine(Dir, "api.sock");
    public string ConfigPath => Path.Combine(Dir, "kata-agent.toml");
    // A cgroup parent no earlier run made: each environment starts from a fresh host's cgroup state.
    public string CgroupParent => "/" + Path.GetFileName(Dir);
    protected virtual string DefaultClass => "runc";

    public virtual async Task InitializeAsync()
    {
        Directory.CreateDirectory(Dir);
        await File.WriteAllTextAsync(ConfigPath, $"""
            [agent]
            id = "cli-test"
            data_dir = "{DataDir}"
            runner_dir = "{RunnerLocation.Directory()}"
            [containerd]
            namespace = "kata-agent-cli-test"
            [runtime]
            default_class = "{DefaultClass}"
            allowed_classes = ["kata", "gvisor", "runc"]
            cgroup_parent = "{CgroupParent}"
            [network]
            name = "{Name}"
            bridge = "{Name}"
            subnet = "10.203.{Index}.0/24"
            ip_masquerade = false
            netns_prefix = "{Name}-"
            port_range_start = {PortRangeStart}
            port_range_end = {PortRangeStart + 24}
            [timeouts]
            runner_ready = "90s"
            stop_grace = "5s"
            [api]
            socket = "{SocketPath}"
            [logging]
            level = "warning"
            """);
    }

    public Task<CliResult> RunAsync(params string[] args) => CliProcess.RunAsync(["--config", ConfigPath, .. args]);

    public Task<CliResult> RunWithStdinAsync(string stdin, params string[] args) => CliProcess.RunAsync(["--config", ConfigPath, .. args], stdin);

    internal static int FreeIndex(string prefix, int start)
    {
        for (var i = 0; i < 200; i++)
        {
            var candidate = (start + i * 7) % 200;
            if (!Directory.Exists($"/sys/class/net/{prefix}{candidate}"))
                return candidate;
        }
        return start % 200;
    }

    /// <summary>Network namespaces of this environment's agent (named with its own prefix).</summary>
    public IReadOnlyList<string> Netns() => HostNetwork.NetnsNames().Where(n => n.StartsWith(Name + "-", StringComparison.Ordinal)).ToList();

    public IReadOnlyList<(int Pid, string CommandLine)> ProcessesOfThisEnvironment() =>
        ProcessTable.All().Where(p => p.CommandLine.Contains(Dir, StringComparison.Ordinal) && p.Pid != Environment.ProcessId).ToList();

    private AgentOptions CleanupAgentOptions() => new()
    {
        AgentId = "cli-test",
        DataDir = DataDir,
        Namespace = "kata-agent-cli-test",
        DefaultRuntimeClass = "runc",
        AllowedRuntimeClasses = ["kata", "gvisor", "runc"],
        CgroupParent = CgroupParent,
        RunnerDir = RunnerLocation.Directory(),
        NetworkName = Name,
        BridgeName = Name,
        Subnet = $"10.203.{Index}.0/24",
        IpMasquerade = false,
        NetnsPrefix = Name + "-",
        PortRangeStart = PortRangeStart,
        PortRangeEnd = PortRangeStart + 24,
    };

    /// <summary>What this environment's runs left behind, counted by a fresh agent on its data dir (no agent may hold it).</summary>
    public async Task<AgentLeakCensus> CensusAsync()
    {
        await using var agent = await Agent.StartAsync(CleanupAgentOptions(), NullLoggerFactory.Instance);
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
                await using var agent = await Agent.StartAsync(CleanupAgentOptions(), NullLoggerFactory.Instance);
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
        await HostNetwork.DeleteLinkAsync(Name);
        Mounts.UnmountAllUnder(Dir);
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

internal static class Text
{
    public static int LineCount(string s) => s.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;

    public static string Utf8(byte[] b) => Encoding.UTF8.GetString(b);
}
