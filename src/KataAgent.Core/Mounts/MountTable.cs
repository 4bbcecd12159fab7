using System.Globalization;
using System.Text;

namespace KataAgent.Core.Mounts;

/// <summary>One line of /proc/self/mountinfo: where a mount is and the per-mount options it carries.</summary>
public sealed record MountEntry(int Id, int ParentId, string MountPoint, IReadOnlyList<string> Options, IReadOnlyList<string> OptionalFields);

/// <summary>This process's mount table, read from /proc/self/mountinfo (the kernel's own account of it).</summary>
public static class MountTable
{
    public static IReadOnlyList<MountEntry> Read() => Parse(File.ReadAllLines("/proc/self/mountinfo"));

    public static IReadOnlyList<MountEntry> Parse(IEnumerable<string> lines)
    {
        var result = new List<MountEntry>();
        foreach (var line in lines)
        {
            var fields = line.Split(' ');
            if (fields.Length < 7)
                continue;
            var separator = Array.IndexOf(fields, "-", 6);
            var optional = separator > 6 ? fields[6..separator] : [];
            result.Add(new MountEntry(int.Parse(fields[0], CultureInfo.InvariantCulture), int.Parse(fields[1], CultureInfo.InvariantCulture),
                Unescape(fields[4]), fields[5].Split(','), optional));
        }
        return result;
    }

    /// <summary>Mounts at or below <paramref name="directory"/>, deepest first (the order to unmount them in).</summary>
    public static IReadOnlyList<MountEntry> Below(string directory, bool includeSelf = false)
    {
        var dir = directory.TrimEnd('/');
        return Read().Where(m => m.MountPoint.StartsWith(dir + "/", StringComparison.Ordinal) || (includeSelf && m.MountPoint == dir))
            .OrderByDescending(m => m.MountPoint.Count(c => c == '/')).ThenByDescending(m => m.Id).ToList();
    }

    public static bool IsMountPoint(string path) => Read().Any(m => m.MountPoint == path.TrimEnd('/'));

    /// <summary>mountinfo writes space, tab, newline and backslash as three-digit octal escapes.</summary>
    public static string Unescape(string field)
    {
        if (!field.Contains('\\', StringComparison.Ordinal))
            return field;
        var bytes = new List<byte>();
        for (var i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && IsOctal(field, i + 1))
            {
                bytes.Add((byte)Convert.ToInt32(field.Substring(i + 1, 3), 8));
                i += 3;
            }
            else
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(field[i].ToString()));
            }
        }
        return Encoding.UTF8.GetString([.. bytes]);
    }

    private static bool IsOctal(string s, int at) =>
        at + 3 <= s.Length && s[at] is >= '0' and <= '3' && s[at + 1] is >= '0' and <= '7' && s[at + 2] is >= '0' and <= '7';
}
