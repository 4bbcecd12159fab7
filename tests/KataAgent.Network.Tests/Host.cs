using System.Diagnostics;

namespace KataAgent.Network.Tests;

/// <summary>Runs host tools the tests use to look at the host (iproute2, iptables-save); never used by the library.</summary>
internal static class Host
{
    public static void RequireRoot() =>
        Skip.IfNot(Environment.IsPrivilegedProcess, "needs root: creates network namespaces, bridges and iptables rules");

    public static void RequireTools()
    {
        RequireRoot();
        foreach (string tool in new[] { "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/portmap", "/usr/lib/cni/firewall" })
            Skip.IfNot(File.Exists(tool), $"needs {tool} (Debian package containernetworking-plugins)");
        Skip.IfNot(FindOnPath("iptables-save") is not null, "needs iptables-save (Debian package iptables)");
        Skip.IfNot(FindOnPath("ip") is not null, "needs ip (Debian package iproute2)");
    }

    public static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") + ":/usr/sbin:/sbin").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    public static async Task<(int Exit, string Stdout, string Stderr)> RunAsync(string file, params string[] args)
    {
        var startInfo = new ProcessStartInfo(FindOnPath(file) ?? file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in args)
            startInfo.ArgumentList.Add(arg);
        using var process = Process.Start(startInfo)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var stdout = process.StandardOutput.ReadToEndAsync(timeout.Token);
        var stderr = process.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish within 60 s");
        }
        return (process.ExitCode, await stdout, await stderr);
    }

    public static async Task<string> IptablesSaveAsync()
    {
        var nat = await RunAsync("iptables-save", "-t", "nat");
        var filter = await RunAsync("iptables-save", "-t", "filter");
        Assert.True(nat.Exit == 0 && filter.Exit == 0, $"iptables-save failed: {nat.Stderr} {filter.Stderr}");
        return nat.Stdout + filter.Stdout;
    }

    public static bool LinkExists(string name) => Directory.Exists($"/sys/class/net/{name}");

    public static IReadOnlyList<string> BridgePorts(string bridge) =>
        Directory.Exists($"/sys/class/net/{bridge}/brif")
            ? Directory.EnumerateFileSystemEntries($"/sys/class/net/{bridge}/brif").Select(Path.GetFileName).OfType<string>().ToList()
            : [];

    public static async Task DeleteLinkIfPresentAsync(string name)
    {
        if (LinkExists(name))
        {
            var result = await RunAsync("ip", "link", "del", name);
            Assert.True(result.Exit == 0 || !LinkExists(name), $"ip link del {name}: {result.Stderr}");
        }
    }

    /// <summary>
    /// Waits until no process has all the given arguments (a killed child is reparented and reaped by init a
    /// moment later), and returns those still there after the wait.
    /// </summary>
    public static async Task<IReadOnlyList<int>> ProcessesStillRunningAsync(params string[] arguments)
    {
        for (int i = 0; i < 100; i++)
        {
            if (ProcessesWithArguments(arguments).Count == 0)
                return [];
            await Task.Delay(100);
        }
        return ProcessesWithArguments(arguments);
    }

    /// <summary>Processes whose command line contains all the given arguments (to find leaked fake-plugin children).</summary>
    public static IReadOnlyList<int> ProcessesWithArguments(params string[] arguments)
    {
        var found = new List<int>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid))
                continue;
            try
            {
                string[] argv = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0');
                if (arguments.All(argv.Contains))
                    found.Add(pid);
            }
            catch (IOException)
            {
                // The process went away while scanning.
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return found;
    }
}
