namespace KataAgent.Core.Mounts;

/// <summary>
/// A requested host path split into the allowed root it lies under and the components below it.
/// Pure text: nothing is resolved here, and '.' or '..' are refused outright, because after a
/// symlink '..' means something else to the kernel than to the text.
/// </summary>
public sealed record MountSourcePath(string Original, string Root, IReadOnlyList<string> Components)
{
    public static MountSourcePath Parse(string hostPath, IReadOnlyList<string> allowedRoots)
    {
        if (string.IsNullOrEmpty(hostPath) || hostPath[0] != '/')
            throw new MountSourceException(hostPath, "is not an absolute path");
        if (hostPath.Contains('\0', StringComparison.Ordinal))
            throw new MountSourceException(hostPath, "contains a NUL byte");
        var components = hostPath.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (components.Any(c => c is "." or ".."))
            throw new MountSourceException(hostPath, "has a '.' or '..' component: give the path without them");
        var roots = allowedRoots.Select(NormalizeRoot).ToList();
        if (roots.Count == 0)
            throw new MountSourceException(hostPath, "is not allowed: this agent allows no host mounts (configure agent.allowed_mount_roots)");
        // The longest root wins, so a narrower root's rules are the ones that apply.
        foreach (var root in roots.OrderByDescending(r => r.Length))
        {
            var rootComponents = root.Split('/', StringSplitOptions.RemoveEmptyEntries);
            if (rootComponents.Length <= components.Length && rootComponents.SequenceEqual(components.Take(rootComponents.Length), StringComparer.Ordinal))
                return new MountSourcePath(hostPath, root, components[rootComponents.Length..]);
        }
        throw new MountSourceException(hostPath, $"is not under an allowed root ({string.Join(", ", roots)})");
    }

    /// <summary>Roots come from the operator's config; they are made absolute and canonical in text only.</summary>
    public static string NormalizeRoot(string root)
    {
        var full = Path.GetFullPath(root).TrimEnd('/');
        return full.Length == 0 ? "/" : full;
    }

    /// <summary>The text of the root plus the first <paramref name="count"/> components, for messages.</summary>
    public string Prefix(int count) => Root.TrimEnd('/') + "/" + string.Join('/', Components.Take(count));
}
