namespace KataAgent.Containerd.Runtime;

/// <summary>
/// The runc shim calls its runtime binary with runc's command line. runsc accepts it, but with
/// its own sandbox network it refuses to run in the root netns, so the wrapper makes it use the
/// netns given in the spec (the one CNI wired) instead.
/// </summary>
public static class GvisorWrapper
{
    public static async Task<string> EnsureAsync(string directory, string runscPath = "/usr/bin/runsc", CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(directory);
        var path = Path.Combine(directory, "runsc-kata-agent");
        var script = $"#!/bin/sh\n# Written by kata-agent: gVisor with the container's own network namespace.\nexec {runscPath} --network=host \"$@\"\n";
        if (!File.Exists(path) || await File.ReadAllTextAsync(path, cancellationToken).ConfigureAwait(false) != script)
        {
            var temp = path + ".tmp";
            await File.WriteAllTextAsync(temp, script, cancellationToken).ConfigureAwait(false);
            File.SetUnixFileMode(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
                                       UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
            File.Move(temp, path, overwrite: true);
        }
        return path;
    }
}
