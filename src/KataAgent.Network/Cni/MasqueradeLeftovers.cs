using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace KataAgent.Network;

/// <summary>
/// Removes the per-container masquerade chain the bridge plugin leaves behind. bridge (1.1.1 here) learns the
/// addresses to un-masquerade from the container's interface, not from prevResult; when that interface is
/// already gone (deleted veth, vanished namespace) its DEL succeeds and leaves CNI-&lt;hash&gt; in nat. The rules
/// carry the comment <c>name: "NET" id: "ID"</c>, which identifies exactly this container's rules.
/// </summary>
internal static partial class MasqueradeLeftovers
{
    public static async Task<int> RemoveAsync(string networkName, string containerId, TimeSpan timeout, CancellationToken cancellationToken)
    {
        string? save = FindTool("iptables-save");
        string? restore = FindTool("iptables-restore");
        if (save is null || restore is null)
            return 0; // without iptables nothing could have created the chain either

        var (exit, output, error) = await RunAsync(save, ["-t", "nat"], null, timeout, cancellationToken).ConfigureAwait(false);
        if (exit != 0)
            throw new CniException($"iptables-save -t nat failed with status {exit}: {error.Trim()}");

        // Names and ids are validated to [A-Za-z0-9_.-], so they need no escaping inside the pattern.
        string comment = $"--comment \"name: \\\"{networkName}\\\" id: \\\"{containerId}\\\"\"";
        var deletes = new List<string>();
        var chains = new SortedSet<string>(StringComparer.Ordinal);
        foreach (string line in output.Split('\n'))
        {
            if (!line.StartsWith("-A ", StringComparison.Ordinal) || !line.Contains(comment, StringComparison.Ordinal))
                continue;
            string chain = line.Split(' ')[1];
            if (HashChain().IsMatch(chain))
                chains.Add(chain);
            else
                deletes.Add("-D" + line[2..]);
            var jump = JumpTarget().Match(line);
            if (jump.Success)
                chains.Add(jump.Groups[1].Value);
        }
        if (deletes.Count == 0 && chains.Count == 0)
            return 0;

        var script = new StringBuilder("*nat\n");
        foreach (string delete in deletes)
            script.Append(delete).Append('\n');
        foreach (string chain in chains)
            script.Append("-F ").Append(chain).Append('\n');
        foreach (string chain in chains)
            script.Append("-X ").Append(chain).Append('\n');
        script.Append("COMMIT\n");
        (exit, _, error) = await RunAsync(restore, ["-w", "--noflush"], script.ToString(), timeout, cancellationToken).ConfigureAwait(false);
        if (exit != 0)
            throw new CniException($"removing leftover masquerade rules of container '{containerId}' failed: iptables-restore status {exit}: {error.Trim()}");
        return deletes.Count + chains.Count;
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

    // The bridge plugin's per-container chain: CNI- followed by a hex hash (not CNI-HOSTPORT-*, CNI-DN-*, CNI-FORWARD).
    [GeneratedRegex("^CNI-[0-9a-f]{8,}$")]
    private static partial Regex HashChain();

    [GeneratedRegex(" -j (CNI-[0-9a-f]{8,})( |$)")]
    private static partial Regex JumpTarget();
}
