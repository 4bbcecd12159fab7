using System.Diagnostics;

namespace KataAgent.Testing;

/// <summary>Host-side network facts for leak checks: netns names, links, CNI iptables chains.</summary>
public static partial class HostNetwork
{
    public static IReadOnlyList<string> NetnsNames() =>
        Directory.Exists("/var/run/netns") ? Directory.GetFiles("/var/run/netns").Select(Path.GetFileName).OfType<string>().ToList() : [];

    public static async Task<IReadOnlyList<string>> CniChainsAsync()
    {
        var result = new List<string>();
        foreach (var table in new[] { "nat", "filter" })
        {
            var output = await RunAsync("iptables", "-w", "-t", table, "-S");
            // Per-container chains (CNI-<hash>, CNI-DN-<hash>); the shared CNI-HOSTPORT-*/CNI-FORWARD stay.
            result.AddRange(output.Split('\n').Where(l => PerContainerChain().IsMatch(l)).Select(l => $"{table}:{l[3..]}"));
        }
        return result;
    }

    [System.Text.RegularExpressions.GeneratedRegex("^-N CNI-(DN-)?[0-9a-f]{8,}")]
    private static partial System.Text.RegularExpressions.Regex PerContainerChain();

    /// <summary>iptables rules (any table) whose text names this container id: CNI tags its rules with it.</summary>
    public static async Task<IReadOnlyList<string>> RulesMentioningAsync(string containerId)
    {
        var result = new List<string>();
        foreach (var table in new[] { "nat", "filter", "mangle" })
        {
            var output = await RunAsync("iptables", "-w", "-t", table, "-S");
            result.AddRange(output.Split('\n').Where(l => l.Contains(containerId, StringComparison.Ordinal)).Select(l => $"{table}: {l}"));
        }
        return result;
    }

    /// <summary>Removes a test network's bridge and the agent's nftables guard tables for it (kata_agent_BRIDGE).</summary>
    public static async Task DeleteLinkAsync(string name)
    {
        if (Directory.Exists($"/sys/class/net/{name}"))
            await RunAsync("ip", "link", "del", name);
        var table = "kata_agent_" + name.Replace('-', '_').Replace('.', '_');
        foreach (var family in new[] { "inet", "bridge" })
        {
            if ((await RunAsync("nft", "list", "tables", family)).Contains($"table {family} {table}\n", StringComparison.Ordinal))
                await RunAsync("nft", "delete", "table", family, table);
        }
    }

    /// <summary>Runs a command and fails with its output when it exits non-zero.</summary>
    public static async Task RunCheckedAsync(string file, params string[] args)
    {
        var (exit, output) = await ExecuteAsync(file, args);
        if (exit != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed (exit {exit}): {output}");
    }

    /// <summary>Runs a command; its stdout then stderr, whatever the exit code.</summary>
    public static async Task<string> RunAsync(string file, params string[] args) => (await ExecuteAsync(file, args)).Output;

    private static async Task<(int Exit, string Output)> ExecuteAsync(string file, string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await stdout + await stderr);
    }
}
