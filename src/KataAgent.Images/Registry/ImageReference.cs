using System.Diagnostics.CodeAnalysis;
using System.Text.RegularExpressions;

namespace KataAgent.Images.Registry;

/// <summary>A malformed image reference; the message says which part is wrong and why.</summary>
public sealed class ImageReferenceException(string message) : FormatException(message);

/// <summary>
/// A Docker-style image reference <c>[registry[:port]/]repository[:tag][@digest]</c>, normalised the way Docker and
/// containerd do: no registry means <c>docker.io</c>, a one-part repository on docker.io gets <c>library/</c>, and no
/// tag and no digest means the tag <c>latest</c>. The first path part is a registry when it contains a dot or a colon,
/// or is <c>localhost</c>.
/// </summary>
public sealed partial record ImageReference
{
    public const string DockerHub = "docker.io";
    public const string DefaultTag = "latest";
    private const int MaxRepositoryLength = 255;

    private ImageReference(string registry, string repository, string? tag, string? digest)
    {
        Registry = registry;
        Repository = repository;
        Tag = tag;
        Digest = digest;
    }

    /// <summary>Registry host, with its port when one was given (<c>docker.io</c>, <c>127.0.0.1:5000</c>, <c>[::1]:5000</c>).</summary>
    public string Registry { get; }

    /// <summary>Repository path inside the registry (<c>library/python</c>).</summary>
    public string Repository { get; }

    /// <summary>The tag; null only when the reference names a digest and no tag.</summary>
    public string? Tag { get; }

    /// <summary>The manifest digest (<c>sha256:...</c>), when the reference pins one.</summary>
    public string? Digest { get; }

    /// <summary>What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.</summary>
    public string ManifestReference => Digest ?? Tag!;

    /// <summary><c>registry/repository</c>, no tag or digest.</summary>
    public string Name => $"{Registry}/{Repository}";

    /// <summary>The same repository with another tag (and no digest).</summary>
    public ImageReference WithTag(string tag) => Parse($"{Name}:{tag}");

    /// <summary>The same repository pinned to a digest (and no tag).</summary>
    public ImageReference WithDigest(string digest) => Parse($"{Name}@{digest}");

    /// <summary>The fully qualified form: <c>docker.io/library/python:3.12</c>, <c>127.0.0.1:5000/x/y@sha256:...</c>.</summary>
    public override string ToString() => Name + (Tag is null ? "" : ":" + Tag) + (Digest is null ? "" : "@" + Digest);

    public static bool TryParse(string? text, [NotNullWhen(true)] out ImageReference? reference)
    {
        try
        {
            reference = Parse(text);
            return true;
        }
        catch (ImageReferenceException)
        {
            reference = null;
            return false;
        }
    }

    /// <summary>Parses and normalises a reference; throws <see cref="ImageReferenceException"/> naming what is wrong.</summary>
    public static ImageReference Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            throw new ImageReferenceException("image reference is empty");
        }

        if (text.Any(c => char.IsWhiteSpace(c) || char.IsControl(c)))
        {
            throw new ImageReferenceException($"image reference '{text}' contains whitespace or control characters");
        }

        var rest = text;
        string? digest = null;
        var at = rest.IndexOf('@', StringComparison.Ordinal);
        if (at >= 0)
        {
            digest = rest[(at + 1)..];
            rest = rest[..at];
            if (digest.Length == 0)
            {
                throw new ImageReferenceException($"image reference '{text}': '@' is not followed by a digest");
            }

            if (!OciDigest.IsValid(digest))
            {
                throw new ImageReferenceException($"image reference '{text}': digest '{digest}' is not sha256:<64 lowercase hex digits>");
            }
        }

        string? tag = null;
        var lastSlash = rest.LastIndexOf('/');
        var colon = rest.IndexOf(':', lastSlash + 1);
        if (colon >= 0)
        {
            tag = rest[(colon + 1)..];
            rest = rest[..colon];
            if (!TagPattern().IsMatch(tag))
            {
                throw new ImageReferenceException(tag.Length == 0
                    ? $"image reference '{text}': ':' is not followed by a tag"
                    : $"image reference '{text}': tag '{tag}' is invalid (letters, digits, '_', '.', '-'; at most 128 characters; not starting with '.' or '-')");
            }
        }

        if (rest.Length == 0)
        {
            throw new ImageReferenceException($"image reference '{text}' has no repository name");
        }

        string registry;
        string repository;
        var firstSlash = rest.IndexOf('/', StringComparison.Ordinal);
        var first = firstSlash < 0 ? null : rest[..firstSlash];
        if (first is not null && (first.Contains('.', StringComparison.Ordinal) || first.Contains(':', StringComparison.Ordinal) || first == "localhost" || first.StartsWith('[')))
        {
            registry = ValidateRegistry(text, first);
            repository = rest[(firstSlash + 1)..];
        }
        else
        {
            registry = DockerHub;
            repository = rest;
        }

        if (repository.Length == 0)
        {
            throw new ImageReferenceException($"image reference '{text}' has no repository name after the registry");
        }

        if (registry == "index.docker.io" || registry == "registry-1.docker.io")
        {
            registry = DockerHub;
        }

        if (registry == DockerHub && !repository.Contains('/', StringComparison.Ordinal))
        {
            repository = "library/" + repository;
        }

        ValidateRepository(text, repository);
        if (tag is null && digest is null)
        {
            tag = DefaultTag;
        }

        return new ImageReference(registry, repository, tag, digest);
    }

    private static string ValidateRegistry(string text, string registry)
    {
        string host;
        string? port = null;
        if (registry.StartsWith('['))
        {
            var close = registry.IndexOf(']', StringComparison.Ordinal);
            if (close < 0 || !System.Net.IPAddress.TryParse(registry[1..close], out var address) || address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6)
            {
                throw new ImageReferenceException($"image reference '{text}': registry '{registry}' is not a valid bracketed IPv6 address");
            }

            host = registry[..(close + 1)];
            var after = registry[(close + 1)..];
            if (after.Length > 0)
            {
                if (after[0] != ':')
                {
                    throw new ImageReferenceException($"image reference '{text}': registry '{registry}' has text after the IPv6 address that is not a port");
                }

                port = after[1..];
            }
        }
        else
        {
            var colon = registry.IndexOf(':', StringComparison.Ordinal);
            host = colon < 0 ? registry : registry[..colon];
            port = colon < 0 ? null : registry[(colon + 1)..];
            if (!HostPattern().IsMatch(host))
            {
                throw new ImageReferenceException($"image reference '{text}': registry host '{host}' is not a valid host name or IPv4 address");
            }
        }

        if (port is not null && (!int.TryParse(port, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var number) || number is < 1 or > 65535))
        {
            throw new ImageReferenceException($"image reference '{text}': registry port '{port}' is not a number from 1 to 65535");
        }

        return !registry.Any(char.IsUpper) ? registry : host.ToLowerInvariant() + (port is null ? "" : ":" + port);
    }

    private static void ValidateRepository(string text, string repository)
    {
        if (repository.Length > MaxRepositoryLength)
        {
            throw new ImageReferenceException($"image reference '{text}': repository name is {repository.Length} characters long, more than {MaxRepositoryLength}");
        }

        foreach (var component in repository.Split('/'))
        {
            if (component.Length == 0)
            {
                throw new ImageReferenceException($"image reference '{text}': repository '{repository}' has an empty path component");
            }

            if (component.Any(char.IsUpper))
            {
                throw new ImageReferenceException($"image reference '{text}': repository '{repository}' must be lowercase");
            }

            if (!ComponentPattern().IsMatch(component))
            {
                throw new ImageReferenceException(
                    $"image reference '{text}': repository path component '{component}' is invalid (lowercase letters and digits, separated by '.', '_', '__' or dashes)");
            }
        }
    }

    [GeneratedRegex(@"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]
    private static partial Regex TagPattern();

    [GeneratedRegex(@"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")]
    private static partial Regex ComponentPattern();

    [GeneratedRegex(@"^(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*$")]
    private static partial Regex HostPattern();
}
