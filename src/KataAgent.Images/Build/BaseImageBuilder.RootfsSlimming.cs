namespace KataAgent.Images;

// Rootfs slimming for the python recipe: caches, docs, man pages and locales out, and dpkg told to keep them out.
public sealed partial class BaseImageBuilder
{
    /// <summary>Removes what a session image does not need and keeps dpkg from bringing docs back.</summary>
    private static void SlimDebianRootfs(string rootfs)
    {
        string[] emptied =
        [
            "var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian",
            "usr/share/linda", "var/log", "tmp", "var/tmp", "dev",
        ];
        foreach (var dir in emptied)
        {
            EmptyDirectory(Path.Combine(rootfs, dir), keepTopLevelFiles: false);
        }

        EmptyDirectory(Path.Combine(rootfs, "usr/share/locale"), keepTopLevelFiles: true); // keeps locale.alias

        foreach (var file in new[] { "var/cache/ldconfig/aux-cache", "etc/hostname", "etc/machine-id" })
        {
            DeleteFile(Path.Combine(rootfs, file));
        }

        foreach (var dir in new[] { "var/cache/debconf", "var/lib/dpkg" })
        {
            var full = Path.Combine(rootfs, dir);
            if (Directory.Exists(full))
            {
                foreach (var old in Directory.EnumerateFiles(full, "*-old"))
                {
                    DeleteFile(old);
                }
            }
        }

        // debootstrap copies the host's resolv.conf; the runtime provides the session's
        var resolv = Path.Combine(rootfs, "etc/resolv.conf");
        if (File.Exists(resolv) && new FileInfo(resolv).LinkTarget is null)
        {
            File.WriteAllText(resolv, "");
        }

        var dpkgConf = Path.Combine(rootfs, "etc/dpkg/dpkg.cfg.d");
        if (Directory.Exists(dpkgConf))
        {
            File.WriteAllText(Path.Combine(dpkgConf, "01-kata-agent-slim"),
                "# kata-agent base image: keep docs, man pages and translations out\n"
                + "path-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\n"
                + "path-exclude=/usr/share/locale/*/*\npath-exclude=/usr/share/lintian/*\n");
        }
    }

    private static void EmptyDirectory(string directory, bool keepTopLevelFiles)
    {
        if (!Directory.Exists(directory) || new DirectoryInfo(directory).LinkTarget is not null)
        {
            return;
        }

        foreach (var entry in Directory.EnumerateFileSystemEntries(directory))
        {
            var stat = NativeFs.LStat(entry);
            if (stat.Type == UnixStat.Directory)
            {
                Directory.Delete(entry, recursive: true); // does not follow symlinks inside
            }
            else if (!keepTopLevelFiles)
            {
                File.Delete(entry);
            }
        }
    }

    private static void DeleteFile(string path)
    {
        if (File.Exists(path) || new FileInfo(path).LinkTarget is not null)
        {
            File.Delete(path);
        }
    }
}
