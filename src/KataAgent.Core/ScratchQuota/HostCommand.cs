using KataAgent.Images;

namespace KataAgent.Core.ScratchQuota;

/// <summary>Runs one of the host's filesystem tools (mkfs.ext4, mount, umount, losetup) and says what it printed when it fails.</summary>
internal static class HostCommand
{
    public static async Task<(int Exit, string Output)> RunAsync(string file, IReadOnlyList<string> args, CancellationToken cancellationToken)
    {
        try
        {
            var result = await ChildProcess.RunAsync(file, args, null, cancellationToken).ConfigureAwait(false);
            return (result.ExitCode, result.Output.Trim());
        }
        catch (FileNotFoundException e)
        {
            throw new InvalidOperationException($"cannot run {file} (the scratch disk quota needs e2fsprogs and util-linux): {e.Message}", e);
        }
    }

    public static async Task<string> RunCheckedAsync(string file, IReadOnlyList<string> args, CancellationToken cancellationToken)
    {
        var (exit, output) = await RunAsync(file, args, cancellationToken).ConfigureAwait(false);
        if (exit != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed (exit {exit}): {output}");
        return output;
    }
}
