using System.Globalization;
using System.Text;

namespace KataAgent.Core.ScratchQuota;

/// <summary>What the kernel says is mounted (/proc/self/mountinfo) and which loop devices are attached (/sys/block/loop*).</summary>
internal static class HostMounts
{
    /// <summary>Mount points, as the kernel spells them (octal escapes decoded), in mount order.</summary>
    public static IReadOnlyList<string> MountPoints()
    {
        var result = new List<string>();
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var fields = line.Split(' ');
            if (fields.Length > 4)
                result.Add(Unescape(fields[4]));
        }
        return result;
    }

    /// <summary>Mount points strictly below <paramref name="directory"/>.</summary>
    public static IReadOnlyList<string> MountPointsUnder(string directory)
    {
        var prefix = Path.GetFullPath(directory).TrimEnd('/') + "/";
        return MountPoints().Where(m => m.StartsWith(prefix, StringComparison.Ordinal)).Distinct(StringComparer.Ordinal).ToList();
    }

    public static bool IsMountPoint(string path)
    {
        var full = Path.GetFullPath(path).TrimEnd('/');
        return MountPoints().Contains(full, StringComparer.Ordinal);
    }

    /// <summary>Attached loop devices and the file behind each (" (deleted)" stripped).</summary>
    public static IReadOnlyList<(string Device, string BackingFile)> LoopDevices()
    {
        var result = new List<(string, string)>();
        if (!Directory.Exists("/sys/block"))
            return result;
        foreach (var dir in Directory.EnumerateDirectories("/sys/block", "loop*"))
        {
            var backing = Path.Combine(dir, "loop", "backing_file");
            string file;
            try
            {
                file = File.ReadAllText(backing).TrimEnd('\n');
            }
            catch (IOException)
            {
                continue; // not attached
            }
            const string deleted = " (deleted)";
            if (file.EndsWith(deleted, StringComparison.Ordinal))
                file = file[..^deleted.Length];
            result.Add(("/dev/" + Path.GetFileName(dir), file));
        }
        return result;
    }

    private static string Unescape(string field)
    {
        if (!field.Contains('\\', StringComparison.Ordinal))
            return field;
        var text = new StringBuilder(field.Length);
        for (var i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && i + 3 < field.Length &&
                int.TryParse(field.AsSpan(i + 1, 3), NumberStyles.None, CultureInfo.InvariantCulture, out _))
            {
                text.Append((char)Convert.ToInt32(field.Substring(i + 1, 3), 8));
                i += 3;
            }
            else
            {
                text.Append(field[i]);
            }
        }
        return text.ToString();
    }
}
