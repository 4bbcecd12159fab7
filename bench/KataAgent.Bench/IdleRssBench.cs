using System.Diagnostics;
using System.Globalization;
using System.Text;
using Grpc.Core;
using KataAgent.Api.Client;
using KataAgent.Api.V1;
using KataAgent.Testing;

namespace KataAgent.Bench;

/// <summary>
/// Issue 19's idle figure: the resident memory (VmRSS) of a real `kata-agent serve` holding 10 live runc sessions,
/// after they have been idle a while, under each runtime setting (environment variables the .NET runtime reads).
/// The serve runs with the settings its runtimeconfig ships, plus the variant's.
/// </summary>
internal static class IdleRssBench
{
    /// <summary>The variants measured; "as shipped" first (what kata-agent.runtimeconfig.json sets).</summary>
    public static readonly IReadOnlyList<(string Name, Dictionary<string, string> Environment)> Variants =
    [
        ("as shipped", []),
        ("+ DOTNET_gcServer=1 (server GC)", new() { ["DOTNET_gcServer"] = "1" }),
        ("+ DOTNET_gcConcurrent=0 (no background GC)", new() { ["DOTNET_gcConcurrent"] = "0" }),
        ("+ DOTNET_GCgen0size=0x400000 (4 MiB gen0 budget)", new() { ["DOTNET_GCgen0size"] = "0x400000" }),
        ("+ DOTNET_GCConserveMemory=7", new() { ["DOTNET_GCConserveMemory"] = "7" }),
        ("+ DOTNET_GCHeapHardLimit=0x4000000 (64 MiB)", new() { ["DOTNET_GCHeapHardLimit"] = "0x4000000" }),
        ("+ DOTNET_TieredPGO=0", new() { ["DOTNET_TieredPGO"] = "0" }),
        ("+ DOTNET_TieredCompilation=0", new() { ["DOTNET_TieredCompilation"] = "0" }),
        ("+ gcConcurrent=0, GCgen0size=0x400000, TieredPGO=0", new() { ["DOTNET_gcConcurrent"] = "0", ["DOTNET_GCgen0size"] = "0x400000", ["DOTNET_TieredPGO"] = "0" }),
    ];

    public static async Task RunAsync(int sessions, TimeSpan idle, IReadOnlyList<(string Name, Dictionary<string, string> Environment)> variants, StringBuilder report)
    {
        var agentBinary = AgentBinary();
        report.AppendLine(CultureInfo.InvariantCulture, $"`kata-agent serve` ({agentBinary}) with {sessions} live runc sessions, idle {idle.TotalSeconds:0} s; VmRSS and VmHWM from /proc/PID/status.");
        report.AppendLine();
        report.AppendLine("| runtime setting | RSS idle, 0 sessions MiB | RSS idle, with sessions MiB | peak (VmHWM) MiB |");
        report.AppendLine("|---|---|---|---|");
        foreach (var (name, environment) in variants)
        {
            var (empty, loaded, peak) = await MeasureAsync(agentBinary, sessions, idle, environment);
            report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | {empty / 1024.0:0.0} | {loaded / 1024.0:0.0} | {peak / 1024.0:0.0} |");
            await Console.Error.WriteLineAsync($"idle-rss: {name}: {empty / 1024.0:0.0} MiB empty, {loaded / 1024.0:0.0} MiB with {sessions} sessions, peak {peak / 1024.0:0.0} MiB");
        }
    }

    /// <summary>KiB: RSS of the idle serve before any session, RSS with the sessions after the idle wait, and the peak.</summary>
    private static async Task<(long Empty, long Loaded, long Peak)> MeasureAsync(string agentBinary, int sessions, TimeSpan idle, Dictionary<string, string> environment)
    {
        var dir = Path.Combine("/tmp", "kab-rss-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        var options = BenchAgent.Options(Path.Combine(dir, "data"), slot: 2);
        var socket = Path.Combine(dir, "api.sock");
        var config = Path.Combine(dir, "kata-agent.toml");
        await File.WriteAllTextAsync(config, $"""
            [agent]
            id = "bench-rss"
            data_dir = "{options.DataDir}"
            runner_dir = "{options.RunnerDir}"
            [containerd]
            namespace = "kata-agent-bench-rss"
            [runtime]
            default_class = "runc"
            allowed_classes = ["runc", "gvisor"]
            [network]
            name = "{options.NetworkName}"
            bridge = "{options.BridgeName}"
            subnet = "{options.Subnet}"
            ip_masquerade = false
            netns_prefix = "{options.NetnsPrefix}"
            port_range_start = {options.PortRangeStart}
            port_range_end = {options.PortRangeEnd}
            [resources]
            total_cpus = 256
            default_cpus = 0.25
            default_memory = "256m"
            default_scratch = "0"
            [timeouts]
            stop_grace = "2s"
            reconcile_interval = "0s"
            [api]
            socket = "{socket}"
            [logging]
            level = "warning"
            """);
        var start = new ProcessStartInfo(agentBinary) { ArgumentList = { "--config", config, "serve" }, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var key in start.Environment.Keys.Where(k => k.StartsWith("DOTNET_", StringComparison.Ordinal) || k.StartsWith("KATA_AGENT_", StringComparison.Ordinal)).ToList())
            start.Environment.Remove(key);
        foreach (var (key, value) in environment)
            start.Environment[key] = value;
        using var serve = Process.Start(start)!;
        var stderr = serve.StandardError.ReadToEndAsync();
        _ = serve.StandardOutput.ReadToEndAsync();
        var created = new List<string>();
        using var client = ApiClient.ForUnixSocket(socket);
        try
        {
            await Eventually.WaitAsync(async () => await ApiClient.IsListeningAsync(socket) || serve.HasExited, "serve to answer", TimeSpan.FromSeconds(120));
            if (serve.HasExited)
                throw new InvalidOperationException($"serve exited with {serve.ExitCode}: {await stderr}");
            var image = await BuildBaseImageAsync(client);
            await Task.Delay(idle);
            var empty = Status(serve.Id, "VmRSS");
            for (var i = 0; i < sessions; i++)
            {
                using var call = client.Sessions.CreateSession(new CreateSessionRequest { Image = image, RuntimeClass = "runc" });
                await foreach (var reply in call.ResponseStream.ReadAllAsync())
                {
                    if (reply.KindCase == CreateSessionReply.KindOneofCase.Session)
                        created.Add(reply.Session.KernelId);
                }
            }
            await Task.Delay(idle);
            return (empty, Status(serve.Id, "VmRSS"), Status(serve.Id, "VmHWM"));
        }
        finally
        {
            foreach (var id in created)
                await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = id });
            ProcessTable.Kill(serve.Id, 15);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
            try
            {
                await serve.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                serve.Kill(entireProcessTree: true);
            }
            BenchAgent.RemoveDataDir(options.DataDir);
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static async Task<string> BuildBaseImageAsync(ApiClient client)
    {
        using var call = client.Images.BuildBaseImage(new BuildBaseImageRequest { Kind = "python" });
        await foreach (var reply in call.ResponseStream.ReadAllAsync())
        {
            if (reply.KindCase == BuildBaseImageReply.KindOneofCase.Image)
                return reply.Image.Name;
        }
        throw new InvalidOperationException("the base image build ended without an image");
    }

    /// <summary>A "Vm..." line of /proc/PID/status, in KiB.</summary>
    private static long Status(int pid, string field) =>
        long.Parse(File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith(field + ":", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    /// <summary>KATA_AGENT_BINARY, or the kata-agent built next to this bench.</summary>
    private static string AgentBinary()
    {
        if (Environment.GetEnvironmentVariable("KATA_AGENT_BINARY") is { Length: > 0 } chosen)
            return chosen;
        var local = Path.Combine(AppContext.BaseDirectory, "kata-agent");
        return File.Exists(local) ? local : throw new InvalidOperationException($"no kata-agent next to the bench ({local}); set KATA_AGENT_BINARY");
    }
}
