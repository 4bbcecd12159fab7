namespace KataAgent.Images;

/// <summary>One Debian archive source from the host's APT configuration.</summary>
/// <param name="Uri">mirror URI, e.g. http://deb.debian.org/debian</param>
/// <param name="Suites">suites it serves</param>
/// <param name="SignedBy">keyring file from Signed-By / [signed-by=...], if given</param>
/// <param name="File">the file it came from</param>
public sealed record AptSource(string Uri, IReadOnlyList<string> Suites, IReadOnlyList<string> Components, string? SignedBy, string File);

/// <summary>
/// Reads the host's APT sources (<c>/etc/apt/sources.list</c> one-line format and <c>/etc/apt/sources.list.d/*.list</c>,
/// <c>*.sources</c> deb822 format) to find the configured Debian mirror — on these machines the configured mirror is the
/// only one reachable, so the builder never hard-codes one.
/// </summary>
public static class AptSources
{
    /// <summary>All enabled <c>deb</c> (binary) sources, in APT's file order.</summary>
    public static IReadOnlyList<AptSource> Read(string aptDirectory = "/etc/apt")
    {
        var result = new List<AptSource>();
        var main = Path.Combine(aptDirectory, "sources.list");
        if (File.Exists(main))
        {
            result.AddRange(ParseOneLine(File.ReadAllText(main), main));
        }

        var dir = Path.Combine(aptDirectory, "sources.list.d");
        if (Directory.Exists(dir))
        {
            foreach (var file in Directory.EnumerateFiles(dir).Order(StringComparer.Ordinal))
            {
                if (file.EndsWith(".list", StringComparison.Ordinal))
                {
                    result.AddRange(ParseOneLine(File.ReadAllText(file), file));
                }
                else if (file.EndsWith(".sources", StringComparison.Ordinal))
                {
                    result.AddRange(ParseDeb822(File.ReadAllText(file), file));
                }
            }
        }

        return result;
    }

    /// <summary>
    /// The source that serves <paramref name="suite"/> itself (not <c>suite-security</c> or <c>suite-updates</c>).
    /// Throws <see cref="InvalidOperationException"/> listing what is configured when none does.
    /// </summary>
    public static AptSource FindMirror(string suite, string aptDirectory = "/etc/apt")
    {
        var sources = Read(aptDirectory);
        return sources.FirstOrDefault(s => s.Suites.Contains(suite, StringComparer.Ordinal) && s.Uri.StartsWith("http", StringComparison.OrdinalIgnoreCase))
            ?? sources.FirstOrDefault(s => s.Suites.Contains(suite, StringComparer.Ordinal))
            ?? throw new InvalidOperationException(
                $"no APT source for suite '{suite}' in {aptDirectory}/sources.list(.d); configured: "
                + (sources.Count == 0 ? "none" : string.Join("; ", sources.Select(s => $"{s.Uri} {string.Join(',', s.Suites)} ({s.File})"))));
    }

    internal static IEnumerable<AptSource> ParseOneLine(string text, string file)
    {
        foreach (var raw in text.Split('\n'))
        {
            var line = StripComment(raw).Trim();
            if (line.Length == 0)
            {
                continue;
            }

            string? signedBy = null;
            var options = "";
            var open = line.IndexOf('[', StringComparison.Ordinal);
            if (open >= 0)
            {
                var close = line.IndexOf(']', open);
                if (close < 0)
                {
                    continue;
                }

                options = line[(open + 1)..close];
                line = (line[..open] + " " + line[(close + 1)..]).Trim();
            }

            var fields = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 3 || fields[0] != "deb")
            {
                continue;
            }

            foreach (var option in options.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries))
            {
                var eq = option.IndexOf('=', StringComparison.Ordinal);
                if (eq > 0 && option[..eq].Equals("signed-by", StringComparison.OrdinalIgnoreCase))
                {
                    signedBy = option[(eq + 1)..];
                }
            }

            yield return new AptSource(fields[1].TrimEnd('/'), [fields[2]], fields[3..], signedBy, file);
        }
    }

    internal static IEnumerable<AptSource> ParseDeb822(string text, string file)
    {
        // stanzas are separated by blank lines; a line starting with whitespace continues the previous field
        foreach (var stanza in text.Replace("\r", "", StringComparison.Ordinal).Split("\n\n"))
        {
            var fields = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            string? last = null;
            foreach (var raw in stanza.Split('\n'))
            {
                if (raw.StartsWith('#'))
                {
                    continue;
                }

                if (raw.Length > 0 && char.IsWhiteSpace(raw[0]) && last is not null)
                {
                    fields[last] += "\n" + raw.Trim();
                    continue;
                }

                var colon = raw.IndexOf(':', StringComparison.Ordinal);
                if (colon <= 0)
                {
                    continue;
                }

                last = raw[..colon].Trim();
                fields[last] = raw[(colon + 1)..].Trim();
            }

            if (!fields.TryGetValue("Types", out var types) || !Words(types).Contains("deb")
                || !fields.TryGetValue("URIs", out var uris) || !fields.TryGetValue("Suites", out var suites)
                || (fields.TryGetValue("Enabled", out var enabled) && enabled.Equals("no", StringComparison.OrdinalIgnoreCase)))
            {
                continue;
            }

            fields.TryGetValue("Components", out var components);
            fields.TryGetValue("Signed-By", out var signedBy);
            if (signedBy is not null && (signedBy.Contains('\n', StringComparison.Ordinal) || signedBy.StartsWith("-----", StringComparison.Ordinal)))
            {
                signedBy = null; // an inline key block, not a file
            }

            foreach (var uri in Words(uris))
            {
                yield return new AptSource(uri.TrimEnd('/'), Words(suites), Words(components ?? ""), signedBy, file);
            }
        }
    }

    private static string StripComment(string line)
    {
        var hash = line.IndexOf('#', StringComparison.Ordinal);
        return hash >= 0 ? line[..hash] : line;
    }

    private static List<string> Words(string s) => s.Split([' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries).ToList();
}
