using System.Globalization;
using System.Text;

namespace KataAgent.Core.HostDirectories;

/// <summary>One line of /proc/self/mountinfo: where a mount is and its per-mount options (nosuid, nodev, ...).</summary>
public sealed record MountEntry(int Id, string MountPoint, IReadOnlySet<string> Options)
{
    public bool Has(string option) => Options.Contains(option);
}

/// <summary>The calling process's mount table, as the kernel reports it in /proc/self/mountinfo.</summary>
public static class MountTable
{
    public const string MountInfoPath = "/proc/self/mountinfo";

    public static IReadOnlyList<MountEntry> Read() => Parse(File.ReadAllLines(MountInfoPath));

    public static IReadOnlyList<MountEntry> Parse(IEnumerable<string> lines)
    {
        var entries = new List<MountEntry>();
        foreach (var line in lines)
        {
            // "36 35 98:0 /root /mnt/point rw,nosuid,relatime shared:1 - ext4 /dev/sda1 rw"
            var fields = line.Split(' ');
            if (fields.Length < 6 || !int.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var id))
                continue;
            entries.Add(new MountEntry(id, Unescape(fields[4]), fields[5].Split(',').ToHashSet(StringComparer.Ordinal)));
        }
        return entries;
    }

    /// <summary>
    /// The mount a path is on: the longest mount point that is the path or one of its parents, the last one when
    /// several are stacked (mountinfo lists a mount after the one it covers). The path is taken as given (no links resolved).
    /// </summary>
    public static MountEntry? Containing(IReadOnlyList<MountEntry> mounts, string path)
    {
        var full = Path.GetFullPath(path).TrimEnd('/');
        MountEntry? best = null;
        foreach (var mount in mounts)
        {
            var point = mount.MountPoint.TrimEnd('/');
            var covers = point.Length == 0 || full == point || full.StartsWith(point + "/", StringComparison.Ordinal);
            if (covers && (best is null || point.Length >= best.MountPoint.TrimEnd('/').Length))
                best = mount;
        }
        return best;
    }

    private static bool ContainsOnlyOctalDigits(this ReadOnlySpan<char> span)
    {
        foreach (var c in span)
        {
            if (c is < '0' or > '7')
                return false;
        }
        return true;
    }

    /// <summary>mountinfo writes space, tab, newline and backslash in paths as \ooo octal escapes.</summary>
    private static string Unescape(string field)
    {
        if (!field.Contains('\\', StringComparison.Ordinal))
            return field;
        var bytes = new List<byte>();
        for (var i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && i + 3 < field.Length && field.AsSpan(i + 1, 3).ContainsOnlyOctalDigits())
            {
                bytes.Add(Convert.ToByte(field.Substring(i + 1, 3), 8));
                i += 3;
            }
            else
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(field[i].ToString()));
            }
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
