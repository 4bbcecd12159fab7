using System.Runtime.InteropServices;

namespace KataAgent.Testing;

public static partial class Mounts
{
    private const int MNT_DETACH = 2;

    [LibraryImport("libc", EntryPoint = "umount2", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Umount2(string target, int flags);

    public static IReadOnlyList<string> Under(string root)
    {
        var prefix = root.TrimEnd('/') + "/";
        return File.ReadAllLines("/proc/self/mountinfo")
            .Select(line => line.Split(' ')[4].Replace("\\040", " ", StringComparison.Ordinal))
            .Where(target => target.StartsWith(prefix, StringComparison.Ordinal))
            .ToList();
    }

    /// <summary>Lazily unmounts everything under root, deepest first.</summary>
    public static void UnmountAllUnder(string root)
    {
        foreach (var target in Under(root).OrderByDescending(t => t.Length))
            _ = Umount2(target, MNT_DETACH);
    }
}
