using System.Text;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Cgroups;

/// <summary>A mounted cgroup hierarchy: v1 (one per controller set) or the v2 unified one.</summary>
public sealed record CgroupHierarchy(string MountPoint, bool IsUnified, IReadOnlyList<string> Controllers)
{
    public bool Has(string controller) => Controllers.Contains(controller, StringComparer.Ordinal);
}

/// <summary>
/// The cgroup every session's cgroup lives under (the spec's cgroupsPath is <c>Path/kernelId</c>). The agent
/// owns it: runtimes that create a missing parent themselves leave it unusable in places (runsc makes the v1
/// cpuset parent with empty cpus/mems, so every child write is refused), so the agent makes it first, in every
/// hierarchy, with what children need: cpus/mems copied down on v1, controllers delegated on v2.
/// </summary>
public sealed class SessionCgroupParent
{
    // What sessions are limited by; on v2 these are enabled for the parent's children when the host has them.
    private static readonly string[] DelegatedControllers = ["cpu", "cpuset", "memory", "pids", "io", "hugetlb"];

    private readonly string[] _components;
    private readonly ILogger? _logger;

    public SessionCgroupParent(string path, IReadOnlyList<CgroupHierarchy> hierarchies, ILogger? logger = null)
    {
        _components = ParsePath(path);
        Path = "/" + string.Join('/', _components);
        Hierarchies = hierarchies;
        _logger = logger;
    }

    /// <summary>The parent of this host's hierarchies, as /proc/self/mountinfo lists them.</summary>
    public static SessionCgroupParent ForHost(string path, ILogger? logger = null) =>
        new(path, ReadHierarchies("/proc/self/mountinfo"), logger);

    /// <summary>The parent as a cgroup path, e.g. "/kata-agent".</summary>
    public string Path { get; }
    public IReadOnlyList<CgroupHierarchy> Hierarchies { get; }

    public string ChildPath(string kernelId) => $"{Path}/{kernelId}";

    /// <summary>The parent's directory in each hierarchy.</summary>
    public IEnumerable<string> Directories => Hierarchies.Select(h => DirectoryIn(h, _components.Length));

    /// <summary>An absolute cgroup path of the form /a/b (no empty, '.', '..' components); the error names the problem.</summary>
    public static string[] ParsePath(string path)
    {
        if (!path.StartsWith('/'))
            throw new ArgumentException($"cgroup parent '{path}' must be an absolute cgroup path such as /kata-agent", nameof(path));
        var components = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (components.Length == 0)
            throw new ArgumentException("cgroup parent '/' is the root cgroup: give the agent a cgroup of its own such as /kata-agent", nameof(path));
        foreach (var c in components)
        {
            if (c is "." or ".." || c.Any(ch => char.IsControl(ch) || ch == '\\'))
                throw new ArgumentException($"cgroup parent '{path}' has an invalid component '{c}'", nameof(path));
        }
        return components;
    }

    /// <summary>
    /// Creates the parent (and its ancestors) in every hierarchy and makes it usable for children. Idempotent and
    /// cheap when all is in place, so every create calls it: a parent removed while the agent runs comes back.
    /// </summary>
    public async Task EnsureAsync(CancellationToken cancellationToken = default)
    {
        foreach (var hierarchy in Hierarchies)
        {
            if (hierarchy.IsUnified)
                await EnsureUnifiedAsync(hierarchy, cancellationToken).ConfigureAwait(false);
            else
                await EnsureV1Async(hierarchy, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task EnsureV1Async(CgroupHierarchy hierarchy, CancellationToken cancellationToken)
    {
        for (var depth = 1; depth <= _components.Length; depth++)
        {
            var dir = DirectoryIn(hierarchy, depth);
            Directory.CreateDirectory(dir);
            if (!hierarchy.Has("cpuset"))
                continue;
            // A v1 cpuset child may only use what its parent has: a parent with none refuses every child.
            var parentDir = DirectoryIn(hierarchy, depth - 1);
            foreach (var file in new[] { "cpuset.cpus", "cpuset.mems" })
            {
                var own = await ReadAsync(System.IO.Path.Combine(dir, file), cancellationToken).ConfigureAwait(false);
                if (own.Length > 0)
                    continue;
                var inherited = await ReadAsync(System.IO.Path.Combine(parentDir, file), cancellationToken).ConfigureAwait(false);
                if (inherited.Length == 0)
                    throw new InvalidOperationException($"cannot prepare cgroup {dir}: {System.IO.Path.Combine(parentDir, file)} is empty");
                await WriteAsync(System.IO.Path.Combine(dir, file), inherited, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private async Task EnsureUnifiedAsync(CgroupHierarchy hierarchy, CancellationToken cancellationToken)
    {
        // Each level enables for its children what it has itself, down to the parent's own subtree_control.
        for (var depth = 0; depth <= _components.Length; depth++)
        {
            var dir = DirectoryIn(hierarchy, depth);
            Directory.CreateDirectory(dir);
            var available = (await ReadAsync(System.IO.Path.Combine(dir, "cgroup.controllers"), cancellationToken).ConfigureAwait(false))
                .Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var enabled = (await ReadAsync(System.IO.Path.Combine(dir, "cgroup.subtree_control"), cancellationToken).ConfigureAwait(false))
                .Split(' ', StringSplitOptions.RemoveEmptyEntries);
            foreach (var controller in DelegatedControllers.Where(c => available.Contains(c) && !enabled.Contains(c)))
            {
                try
                {
                    await WriteAsync(System.IO.Path.Combine(dir, "cgroup.subtree_control"), "+" + controller, cancellationToken).ConfigureAwait(false);
                }
                catch (IOException e)
                {
                    // A level with processes of its own cannot delegate (no internal processes): sessions then run without it.
                    _logger?.LogWarning("cannot enable the {Controller} controller below {Dir}: {Message}", controller, dir, e.Message);
                }
            }
        }
    }

    /// <summary>Session cgroups still under the parent, as "mountpoint:name" (a destroyed session leaves none).</summary>
    public IReadOnlyList<string> Children()
    {
        var result = new List<string>();
        foreach (var hierarchy in Hierarchies)
        {
            var dir = DirectoryIn(hierarchy, _components.Length);
            if (Directory.Exists(dir))
                result.AddRange(Directory.GetDirectories(dir).Select(d => $"{hierarchy.MountPoint}:{System.IO.Path.GetFileName(d)}"));
        }
        return result;
    }

    /// <summary>
    /// Removes the parent and then each ancestor, deepest first, in every hierarchy, stopping where one is not empty
    /// (tests; an operator's clean-up). Returns what could not be removed.
    /// </summary>
    public IReadOnlyList<string> RemoveIfEmpty()
    {
        var left = new List<string>();
        foreach (var hierarchy in Hierarchies)
        {
            for (var depth = _components.Length; depth >= 1; depth--)
            {
                var dir = DirectoryIn(hierarchy, depth);
                if (!Directory.Exists(dir))
                    continue;
                try
                {
                    // cgroupfs removes a cgroup with rmdir, never by deleting its files.
                    Directory.Delete(dir, recursive: false);
                }
                catch (IOException e)
                {
                    left.Add($"{dir}: {e.Message}");
                    break;
                }
            }
        }
        return left;
    }

    private string DirectoryIn(CgroupHierarchy hierarchy, int depth) =>
        System.IO.Path.Combine([hierarchy.MountPoint, .. _components.Take(depth)]);

    private static async Task<string> ReadAsync(string path, CancellationToken cancellationToken)
    {
        try
        {
            return (await File.ReadAllTextAsync(path, cancellationToken).ConfigureAwait(false)).Trim();
        }
        catch (FileNotFoundException)
        {
            return "";
        }
    }

    // cgroupfs files are written in place: no create, no truncate.
    private static async Task WriteAsync(string path, string value, CancellationToken cancellationToken)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1, FileOptions.None);
        await using var streamDisposal = stream.ConfigureAwait(false);
        await stream.WriteAsync(Encoding.ASCII.GetBytes(value), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The cgroup hierarchies mounted with their root at the host's cgroup root ("cgroup" and "cgroup2" entries
    /// of a mountinfo file), one per mount point.
    /// </summary>
    public static IReadOnlyList<CgroupHierarchy> ReadHierarchies(string mountInfoPath) =>
        ParseMountInfo(File.ReadAllLines(mountInfoPath));

    public static IReadOnlyList<CgroupHierarchy> ParseMountInfo(IEnumerable<string> lines)
    {
        var result = new Dictionary<string, CgroupHierarchy>(StringComparer.Ordinal);
        foreach (var line in lines)
        {
            // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
            var separator = line.IndexOf(" - ", StringComparison.Ordinal);
            if (separator < 0)
                continue;
            var left = line[..separator].Split(' ');
            var right = line[(separator + 3)..].Split(' ');
            if (left.Length < 5 || right.Length < 3 || left[3] != "/")
                continue;
            var mountPoint = Unescape(left[4]);
            switch (right[0])
            {
                case "cgroup2":
                    result[mountPoint] = new CgroupHierarchy(mountPoint, true, []);
                    break;
                case "cgroup":
                    var controllers = right[2].Split(',').Where(o => o is not ("rw" or "ro") && !o.StartsWith("release_agent", StringComparison.Ordinal)
                        && o is not ("relatime" or "noatime" or "nosuid" or "nodev" or "noexec" or "clone_children" or "noprefix" or "xattr" or "cpuset_v2_mode")).ToList();
                    result[mountPoint] = new CgroupHierarchy(mountPoint, false, controllers);
                    break;
            }
        }
        return result.Values.OrderBy(h => h.MountPoint, StringComparer.Ordinal).ToList();
    }

    // mountinfo escapes space, tab, newline and backslash as \ooo.
    private static string Unescape(string field)
    {
        if (!field.Contains('\\', StringComparison.Ordinal))
            return field;
        var sb = new StringBuilder();
        for (var i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && i + 3 < field.Length && field.Substring(i + 1, 3).All(c => c is >= '0' and <= '7'))
            {
                sb.Append((char)Convert.ToInt32(field.Substring(i + 1, 3), 8));
                i += 3;
            }
            else
            {
                sb.Append(field[i]);
            }
        }
        return sb.ToString();
    }
}
