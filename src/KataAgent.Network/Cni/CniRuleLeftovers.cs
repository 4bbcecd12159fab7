using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace KataAgent.Network;

/// <summary>
/// Removes the per-container iptables rules and chains that CNI plugins leave behind. bridge (1.1.1 here) learns the
/// addresses to un-masquerade from the container's interface, not from prevResult, so a DEL after the interface
/// vanished leaves its CNI-&lt;hash&gt; chain; a portmap ADD still running when its agent died finishes after the
/// next agent's clean-up DEL and leaves its CNI-DN-&lt;hash&gt; chain. A leftover DNAT rule is not only litter: it
/// still maps its host port to an address a later session may hold. Both plugins comment the rules that lead into a
/// container's chain with <c>name: "NET" id: "ID"</c> (portmap prefixes <c>dnat </c>), which is how they are found.
/// </summary>
internal static partial class CniRuleLeftovers
{
    // Both plugins tag rules only in nat (portmap's DNAT chains, bridge's ipMasq chains); this runs after every DEL,
    // so the filter table is not read for nothing.
    private const string Table = "nat";

    /// <summary>Removes the rules of this network whose container id <paramref name="isStale"/> selects; returns how many rules and chains went.</summary>
    public static async Task<int> RemoveAsync(string networkName, Func<string, bool> isStale, TimeSpan timeout, CancellationToken cancellationToken)
    {
        string? save = FindTool("iptables-save");
        string? restore = FindTool("iptables-restore");
        if (save is null || restore is null)
            return 0; // without iptables nothing could have created the rules either

        var (exit, output, error) = await RunAsync(save, ["-t", Table], null, timeout, cancellationToken).ConfigureAwait(false);
        if (exit != 0)
            throw new CniException($"iptables-save -t {Table} failed with status {exit}: {error.Trim()}");
        string? script = BuildRemovalScript(Table, output, networkName, isStale, out int count);
        if (script is null)
            return 0;
        (exit, _, error) = await RunAsync(restore, ["-w", "--noflush"], script, timeout, cancellationToken).ConfigureAwait(false);
        if (exit != 0)
            throw new CniException($"removing leftover CNI rules of network '{networkName}' failed: iptables-restore status {exit}: {error.Trim()}");
        return count;
    }

    /// <summary>The iptables-restore input that deletes the selected containers' rules and chains, or null if there are none.</summary>
    internal static string? BuildRemovalScript(string table, string iptablesSave, string networkName, Func<string, bool> isStale, out int count)
    {
        var deletes = new List<string>();
        var chains = new SortedSet<string>(StringComparer.Ordinal);
        foreach (string line in iptablesSave.Split('\n'))
        {
            if (!line.StartsWith("-A ", StringComparison.Ordinal))
                continue;
            var tag = Tag().Match(line);
            if (!tag.Success || tag.Groups["name"].Value != networkName || !isStale(tag.Groups["id"].Value))
                continue;
            string chain = line.Split(' ')[1];
            if (ContainerChain().IsMatch(chain))
                chains.Add(chain); // the whole chain goes: flushing it removes this rule too
            else
                deletes.Add("-D" + line[2..]);
            var jump = JumpTarget().Match(line);
            if (jump.Success)
                chains.Add(jump.Groups[1].Value);
        }
        count = deletes.Count + chains.Count;
        if (count == 0)
            return null;
        // Only chains that exist in this table: a name from a jump in another table's dump would fail the restore.
        var existing = iptablesSave.Split('\n').Where(l => l.StartsWith(':')).Select(l => l[1..].Split(' ')[0]).ToHashSet(StringComparer.Ordinal);
        chains.IntersectWith(existing);
        count = deletes.Count + chains.Count;
        var script = new StringBuilder().Append('*').Append(table).Append('\n');
        foreach (string delete in deletes)
            script.Append(delete).Append('\n');
        foreach (string chain in chains)
            script.Append("-F ").Append(chain).Append('\n');
        foreach (string chain in chains)
            script.Append("-X ").Append(chain).Append('\n');
        script.Append("COMMIT\n");
        return script.ToString();
    }

    private static string? FindTool(string name) =>
        new[] { "/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin" }.Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    private static async Task<(int Exit, string Stdout, string Stderr)> RunAsync(string file, string[] args, string? stdin, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var startInfo = new ProcessStartInfo(file, args)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(startInfo) ?? throw new CniException($"cannot start {file}");
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        try
        {
            var stdout = process.StandardOutput.ReadToEndAsync(limit.Token);
            var stderr = process.StandardError.ReadToEndAsync(limit.Token);
            if (stdin is not null)
                await process.StandardInput.WriteAsync(stdin.AsMemory(), limit.Token).ConfigureAwait(false);
            process.StandardInput.Close();
            await process.WaitForExitAsync(limit.Token).ConfigureAwait(false);
            return (process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            process.Kill(entireProcessTree: true);
            throw new CniException($"{file} {string.Join(' ', args)} timed out after {timeout.TotalSeconds:0.#} s");
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
    }

    // iptables-save prints the comment as --comment "name: \"NET\" id: \"ID\"" (portmap: "dnat name: ...").
    [GeneratedRegex("""--comment "(dnat )?name: \\"(?<name>[A-Za-z0-9_.\-]+)\\" id: \\"(?<id>[A-Za-z0-9_.\-]+)\\"" """)]
    private static partial Regex Tag();

    // A container's own chain: bridge's CNI-<hash>, portmap's CNI-DN-<hash> (not CNI-HOSTPORT-*, CNI-FORWARD, CNI-ADMIN).
    [GeneratedRegex("^CNI-(DN-)?[0-9a-f]{8,}$")]
    private static partial Regex ContainerChain();

    [GeneratedRegex(" -j (CNI-(?:DN-)?[0-9a-f]{8,})( |$)")]
    private static partial Regex JumpTarget();
}
