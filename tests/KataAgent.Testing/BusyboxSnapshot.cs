using KataAgent.Containerd;

namespace KataAgent.Testing;

/// <summary>
/// A committed snapshot holding a busybox rootfs, made straight through the snapshot API (no
/// image): lets launch and reap tests run in seconds. A parentless overlayfs snapshot is a plain
/// bind of a directory, so the files are written there directly.
/// </summary>
public static class BusyboxSnapshot
{
    public const string BusyboxPath = "/bin/busybox";

    public static async Task<string> EnsureAsync(ContainerdClient client, CancellationToken cancellationToken = default)
    {
        const string name = "test-busybox-rootfs";
        if (await client.Snapshots.FindAsync(name, cancellationToken: cancellationToken) is not null)
            return name;
        if (!File.Exists(BusyboxPath))
            throw new InvalidOperationException($"{BusyboxPath} is missing: install the Debian package busybox-static (scripts/setup.sh does)");

        var key = name + "-prepare-" + Guid.NewGuid().ToString("N")[..6];
        // Nothing references a bare snapshot, so it must be a GC root or containerd collects it (also while it is
        // being filled: another test's delete can trigger a collection between prepare and commit).
        var labels = new Dictionary<string, string> { ["containerd.io/gc.root"] = DateTimeOffset.UtcNow.ToString("O") };
        var mounts = await client.Snapshots.PrepareAsync(key, parent: null, labels: labels, cancellationToken: cancellationToken);
        var bind = mounts.Single(m => m.Type == "bind");
        var root = bind.Source;
        foreach (var dir in new[] { "bin", "proc", "sys", "dev", "etc", "tmp", "home/work", "home/config", "root" })
            Directory.CreateDirectory(Path.Combine(root, dir));
        File.Copy(BusyboxPath, Path.Combine(root, "bin/busybox"));
        File.SetUnixFileMode(Path.Combine(root, "bin/busybox"), (UnixFileMode)0b111_101_101);
        foreach (var applet in new[] { "sh", "echo", "cat", "uname", "sleep", "ls", "id", "true", "false", "head", "dd", "wc", "nc", "touch", "ln" })
            File.CreateSymbolicLink(Path.Combine(root, "bin", applet), "busybox");
        await File.WriteAllTextAsync(Path.Combine(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nwork:x:1000:1000::/home/work:/bin/sh\n", cancellationToken);
        await File.WriteAllTextAsync(Path.Combine(root, "etc/group"), "root:x:0:\nwork:x:1000:\n", cancellationToken);
        await client.Snapshots.CommitAsync(name, key, labels: labels, cancellationToken: cancellationToken);
        return name;
    }
}
