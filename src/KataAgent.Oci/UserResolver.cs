using System.Globalization;

namespace KataAgent.Oci;

/// <summary>A user as the runtime needs it: numbers only.</summary>
public sealed record ResolvedUser(uint Uid, uint Gid, IReadOnlyList<uint> AdditionalGids);

/// <summary>
/// Turns a Docker-style user string into numbers, like Docker and containerd do:
/// "" → root; "uid" or "name" → that user with their primary group from /etc/passwd (0 if the
/// uid has no entry); "user:group" with either part a number or a name; supplementary groups
/// from /etc/group for a user found in /etc/passwd. Names are looked up in the container's own
/// files under a host directory holding its rootfs; without one only numbers and "root" work.
/// </summary>
public static class UserResolver
{
    private sealed record PasswdEntry(string Name, uint Uid, uint Gid);

    private sealed record GroupEntry(string Name, uint Gid, string[] Members);

    public static ResolvedUser Resolve(string user, string? rootfsPath = null)
    {
        user = user.Trim();
        var parts = user.Split(':');
        if (parts.Length > 2)
            throw new InvalidSpecException($"process.user: '{user}' is not of the form user[:group]");
        var userPart = parts[0];
        var groupPart = parts.Length == 2 ? parts[1] : null;
        if (groupPart is not null && groupPart.Length == 0)
            throw new InvalidSpecException($"process.user: '{user}' has an empty group after ':'");

        var passwd = rootfsPath is null ? null : ReadPasswd(rootfsPath);
        var groups = rootfsPath is null ? null : ReadGroups(rootfsPath);

        PasswdEntry? entry;
        uint uid;
        if (userPart.Length == 0)
        {
            uid = 0;
            entry = passwd?.Find(e => e.Uid == 0);
        }
        else if (TryParseId(userPart, out uid))
        {
            entry = passwd?.Find(e => e.Uid == uid);
        }
        else
        {
            CheckNumericLooking(userPart, "user");
            entry = passwd?.Find(e => e.Name == userPart);
            if (entry is null)
            {
                if (userPart != "root")
                    throw new InvalidSpecException(NotFound("user", userPart, rootfsPath, "passwd"));
                entry = new PasswdEntry("root", 0, 0);
            }

            uid = entry.Uid;
        }

        uint gid;
        if (groupPart is null)
        {
            gid = entry?.Gid ?? 0;
        }
        else if (!TryParseId(groupPart, out gid))
        {
            CheckNumericLooking(groupPart, "group");
            var group = groups?.Find(g => g.Name == groupPart);
            if (group is null)
            {
                if (groupPart != "root")
                    throw new InvalidSpecException(NotFound("group", groupPart, rootfsPath, "group"));
                gid = 0;
            }
            else
            {
                gid = group.Gid;
            }
        }

        var additional = entry is null || groups is null
            ? []
            : groups.Where(g => g.Members.Contains(entry.Name) && g.Gid != gid).Select(g => g.Gid).Distinct().ToList();
        return new ResolvedUser(uid, gid, additional);
    }

    private static string NotFound(string what, string name, string? rootfsPath, string file) =>
        rootfsPath is null
            ? $"process.user: {what} name '{name}' needs the container's /etc/{file} to resolve, and no rootfs path was given (use a numeric id)"
            : $"process.user: {what} '{name}' not found in {Path.Combine(rootfsPath, "etc", file)}";

    private static bool TryParseId(string text, out uint id) =>
        uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out id);

    // "-1" or "99999999999" must not be taken for a name.
    private static void CheckNumericLooking(string text, string what)
    {
        var body = text.StartsWith('-') ? text[1..] : text;
        if (body.Length > 0 && body.All(char.IsAsciiDigit))
            throw new InvalidSpecException($"process.user: {what} id '{text}' is outside 0..{uint.MaxValue}");
    }

    private static List<PasswdEntry>? ReadPasswd(string rootfsPath)
    {
        var lines = ReadEtcFile(rootfsPath, "passwd");
        if (lines is null)
            return null;
        var result = new List<PasswdEntry>();
        foreach (var fields in lines)
        {
            // name:password:uid:gid:gecos:home:shell
            if (fields.Length >= 4 && TryParseId(fields[2], out var uid) && TryParseId(fields[3], out var gid))
                result.Add(new PasswdEntry(fields[0], uid, gid));
        }

        return result;
    }

    private static List<GroupEntry>? ReadGroups(string rootfsPath)
    {
        var lines = ReadEtcFile(rootfsPath, "group");
        if (lines is null)
            return null;
        var result = new List<GroupEntry>();
        foreach (var fields in lines)
        {
            // name:password:gid:member,member
            if (fields.Length >= 3 && TryParseId(fields[2], out var gid))
            {
                var members = fields.Length >= 4 ? fields[3].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : [];
                result.Add(new GroupEntry(fields[0], gid, members));
            }
        }

        return result;
    }

    // The rootfs belongs to the image, so a symlinked /etc or /etc/passwd could point anywhere on
    // the host: refuse to follow one rather than read a host file by mistake.
    private static List<string[]>? ReadEtcFile(string rootfsPath, string name)
    {
        var etc = new DirectoryInfo(Path.Combine(rootfsPath, "etc"));
        var file = new FileInfo(Path.Combine(etc.FullName, name));
        if (etc.LinkTarget is not null || file.LinkTarget is not null)
            throw new InvalidSpecException($"process.user: {file.FullName} (or its /etc) is a symlink; not following it out of the rootfs");
        if (!file.Exists)
            return null;
        return File.ReadLines(file.FullName)
            .Select(l => l.Trim())
            .Where(l => l.Length > 0 && !l.StartsWith('#'))
            .Select(l => l.Split(':'))
            .ToList();
    }
}
