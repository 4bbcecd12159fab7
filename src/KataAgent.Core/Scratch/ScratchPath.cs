namespace KataAgent.Core.Scratch;

/// <summary>
/// A validated path relative to the work dir: no absolute path, no "." / ".." / empty component, no
/// NUL. The empty path (or ".") names the work dir itself.
/// </summary>
internal sealed class ScratchPath
{
    private const int MaxComponentBytes = 255;
    private const int MaxPathBytes = 4095;

    private ScratchPath(string original, string[] components)
    {
        Original = original;
        Components = components;
    }

    public string Original { get; }
    public string[] Components { get; }
    public bool IsRoot => Components.Length == 0;
    public string Leaf => Components[^1];
    public string[] Parents => Components[..^1];
    public string Joined => string.Join('/', Components);

    public static ScratchPath Parse(string? path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (path.Length == 0 || path == ".")
            return new ScratchPath(path, []);
        if (path.Contains('\0'))
            throw Invalid(path, "contains a NUL byte");
        if (path[0] == '/')
            throw new ScratchPathException(path, ScratchPathError.EscapesWorkDir, "is an absolute path");
        if (System.Text.Encoding.UTF8.GetByteCount(path) > MaxPathBytes)
            throw Invalid(path, "is too long");
        var parts = path.Split('/');
        foreach (var part in parts)
        {
            if (part.Length == 0)
                throw Invalid(path, "has an empty component");
            if (part == "..")
                throw new ScratchPathException(path, ScratchPathError.EscapesWorkDir, "has a '..' component");
            if (part == ".")
                throw Invalid(path, "has a '.' component");
            if (System.Text.Encoding.UTF8.GetByteCount(part) > MaxComponentBytes)
                throw Invalid(path, "has a component longer than 255 bytes");
        }
        return new ScratchPath(path, parts);
    }

    private static ScratchPathException Invalid(string path, string reason) => new(path, ScratchPathError.InvalidPath, reason);
}
