using System.Globalization;

namespace KataAgent.Core.Sessions;

public sealed record ServicePortDefinition(string Name, string Protocol, IReadOnlyList<int> ContainerPorts);

/// <summary>Parses the image label <c>ai.backend.service-ports</c> (Backend.AI's convention).</summary>
public static class ServicePortLabel
{
    public const string LabelName = "ai.backend.service-ports";
    private static readonly HashSet<string> Protocols = new(StringComparer.Ordinal) { "tcp", "http", "preopen", "vnc", "rdp" };
    private static readonly HashSet<int> Reserved = [2000, 2001, 2002, 2003, 2200, 7681];

    public static IReadOnlyList<ServicePortDefinition> Parse(string? value)
    {
        var result = new List<ServicePortDefinition>();
        if (string.IsNullOrWhiteSpace(value))
            return result;
        var seenPorts = new HashSet<int>();
        var seenNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var item in SplitItems(value))
        {
            var parts = item.Split(':', 3);
            if (parts.Length != 3 || parts[0].Length == 0)
                throw new FormatException($"{LabelName}: '{item}' is not name:protocol:port");
            var (name, protocol, portText) = (parts[0].Trim(), parts[1].Trim(), parts[2].Trim());
            if (protocol == "pty")
                continue;
            if (!Protocols.Contains(protocol))
                throw new FormatException($"{LabelName}: '{item}' has unknown protocol '{protocol}' (tcp, http, preopen, vnc, rdp)");
            if (!seenNames.Add(name))
                throw new FormatException($"{LabelName}: service name '{name}' appears twice");
            var ports = new List<int>();
            var list = portText.StartsWith('[') && portText.EndsWith(']') ? portText[1..^1].Split(',') : [portText];
            foreach (var p in list)
            {
                if (!int.TryParse(p.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var port))
                    throw new FormatException($"{LabelName}: '{item}' has a port that is not a number ('{p.Trim()}')");
                if (port <= 1024 || port >= 65535)
                    throw new FormatException($"{LabelName}: port {port} of '{name}' must be > 1024 and < 65535");
                if (Reserved.Contains(port))
                    throw new FormatException($"{LabelName}: port {port} of '{name}' is reserved (2000-2003, 2200, 7681)");
                if (!seenPorts.Add(port))
                    throw new FormatException($"{LabelName}: port {port} is used twice");
                ports.Add(port);
            }
            result.Add(new ServicePortDefinition(name, protocol, ports));
        }
        return result;
    }

    // Commas separate items but also ports inside [..].
    private static IEnumerable<string> SplitItems(string value)
    {
        var depth = 0;
        var start = 0;
        for (var i = 0; i < value.Length; i++)
        {
            switch (value[i])
            {
                case '[': depth++; break;
                case ']': depth--; break;
                case ',' when depth == 0:
                    if (i > start)
                        yield return value[start..i].Trim();
                    start = i + 1;
                    break;
            }
        }
        if (start < value.Length && value[start..].Trim().Length > 0)
            yield return value[start..].Trim();
    }
}
