using System.Diagnostics;

namespace KataAgent.Core.ScratchQuota;

/// <summary>Runs one of the host's filesystem tools (mkfs.ext4, mount, umount, losetup) and says what it printed when it fails.</summary>
internal static class HostCommand
{
    public static async Task<(int Exit, string Output)> RunAsync(string file, IReadOnlyList<string> args, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
            start.ArgumentList.Add(arg);
        using var process = new Process { StartInfo = start };
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"cannot run {file} (the scratch disk quota needs e2fsprogs and util-linux): {e.Message}", e);
        }
        var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
        try
        {
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // already gone
            }
            await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }
        var output = ((await stdout.ConfigureAwait(false)) + (await stderr.ConfigureAwait(false))).Trim();
        return (process.ExitCode, output);
    }

    public static async Task<string> RunCheckedAsync(string file, IReadOnlyList<string> args, CancellationToken cancellationToken)
    {
        var (exit, output) = await RunAsync(file, args, cancellationToken).ConfigureAwait(false);
        if (exit != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed (exit {exit}): {output}");
        return output;
    }
}
