namespace KataAgent.Core.HostDirectories;

/// <summary>
/// The agent's data dir and the directories in it are root's alone (0700): they hold what guests wrote (scratch),
/// session records with runner keys, environments and bootstrap scripts, and logs. No other local user reaches
/// anything below it, whatever modes a guest gives its files. Tightened at every start (an older agent made them 0755).
/// </summary>
public static class DataDirPermissions
{
    public const UnixFileMode PrivateDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    public const UnixFileMode PrivateFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Creates (or tightens) the data dir itself.</summary>
    public static void SecureDataDir(string dataDir) => MakePrivate(dataDir);

    /// <summary>Creates (or tightens) the directories the agent keeps in its data dir.</summary>
    public static void SecureChildren(AgentOptions options)
    {
        foreach (var dir in new[] { options.ScratchRoot, options.StateDir, options.LogDir })
            MakePrivate(dir);
    }

    /// <summary>The directories that must be 0700, with their mode now, for `doctor`.</summary>
    public static IEnumerable<(string Path, UnixFileMode? Mode)> Describe(AgentOptions options) =>
        new[] { options.DataDir, options.ScratchRoot, options.StateDir, options.LogDir }
            .Select(p => (p, Directory.Exists(p) ? (UnixFileMode?)File.GetUnixFileMode(p) : null));

    private static void MakePrivate(string dir)
    {
        Directory.CreateDirectory(dir, PrivateDirectory);
        File.SetUnixFileMode(dir, PrivateDirectory);
    }
}
