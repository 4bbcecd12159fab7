using System.Globalization;
using Tomlyn.Model;

namespace KataAgent.Cli.Config;

/// <summary>A bad config value: names the key, where it came from, and what is wrong.</summary>
public sealed class ConfigException(IReadOnlyList<string> problems)
    : Exception(problems.Count == 1 ? problems[0] : "the configuration has problems:\n  " + string.Join("\n  ", problems))
{
    public IReadOnlyList<string> Problems { get; } = problems;
}

/// <summary>One raw value from the TOML file (typed) or the environment (text), with converters that name the key on failure.</summary>
public sealed class ConfigValue(string key, object raw, string source)
{
    public string Key { get; } = key;
    public string Source { get; } = source;

    private FormatException Bad(string expected) =>
        new($"{Key} ({Source}): {expected}, got {Describe(raw)}");

    private static string Describe(object value) => value switch
    {
        string s => $"\"{s}\"",
        bool b => b ? "true" : "false",
        TomlArray => "an array",
        TomlTable => "a table",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "?",
    };

    /// <summary>"" in the file or environment: "not set", for keys whose default is computed.</summary>
    public bool IsEmpty => raw is string { Length: 0 };

    public string String() => raw is string s ? s : throw Bad("expected a string");

    public string NonEmptyString()
    {
        var s = String();
        return s.Length > 0 ? s : throw Bad("expected a non-empty string");
    }

    /// <summary>An absolute path; empty allowed when <paramref name="allowEmpty"/>.</summary>
    public string Path(bool allowEmpty = false)
    {
        var s = String();
        if (s.Length == 0 && allowEmpty)
            return s;
        return System.IO.Path.IsPathRooted(s) ? s : throw Bad("expected an absolute path");
    }

    public bool Bool() => raw switch
    {
        bool b => b,
        string s when s is "true" or "1" or "yes" or "on" => true,
        string s when s is "false" or "0" or "no" or "off" => false,
        _ => throw Bad("expected true or false"),
    };

    public long Long(long min = long.MinValue, long max = long.MaxValue)
    {
        long value = raw switch
        {
            long l => l,
            string s when long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) => l,
            _ => throw Bad("expected an integer"),
        };
        return value >= min && value <= max ? value : throw Bad($"expected an integer from {min} to {max}");
    }

    public int Int(int min = int.MinValue, int max = int.MaxValue) => (int)Long(min, max);

    public double Double(double min = double.MinValue, double max = double.MaxValue)
    {
        double value = raw switch
        {
            double d => d,
            long l => l,
            string s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
            _ => throw Bad("expected a number"),
        };
        return value >= min && value <= max && double.IsFinite(value) ? value : throw Bad($"expected a number from {min} to {max}");
    }

    /// <summary>Bytes: an integer, or text like "512MiB", "1g", "64m" (binary units).</summary>
    public long Size(long min = 0)
    {
        long value = raw switch
        {
            long l => l,
            string s => Sizes.TryParse(s, out var bytes) ? bytes : throw Bad("expected a size like 512MiB, 1GiB, 64m or a byte count"),
            _ => throw Bad("expected a size like 512MiB, 1GiB or a byte count"),
        };
        return value >= min ? value : throw Bad($"expected a size of at least {min} bytes");
    }

    /// <summary>A duration: seconds as a number, or text like "500ms", "30s", "5m", "1h".</summary>
    public TimeSpan Duration(TimeSpan? min = null)
    {
        TimeSpan value = raw switch
        {
            long l => TimeSpan.FromSeconds(l),
            double d when double.IsFinite(d) => TimeSpan.FromSeconds(d),
            string s => Durations.TryParse(s, out var t) ? t : throw Bad("expected a duration like 500ms, 30s, 5m or 1h"),
            _ => throw Bad("expected a duration like 30s"),
        };
        return value >= (min ?? TimeSpan.Zero) ? value : throw Bad($"expected a duration of at least {min ?? TimeSpan.Zero}");
    }

    /// <summary>A TOML array of strings, or comma-separated text from the environment.</summary>
    public IReadOnlyList<string> StringList() => raw switch
    {
        TomlArray array => array.Select(item => item as string ?? throw Bad("expected an array of strings")).ToList(),
        string s => s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
        _ => throw Bad("expected an array of strings"),
    };

    public T OneOf<T>(IReadOnlyDictionary<string, T> choices)
    {
        var s = String();
        return choices.TryGetValue(s, out var value) ? value : throw Bad($"expected one of {string.Join(", ", choices.Keys)}");
    }
}

public static class Sizes
{
    public static bool TryParse(string text, out long bytes)
    {
        bytes = 0;
        var s = text.Trim().ToLowerInvariant();
        var i = 0;
        while (i < s.Length && (char.IsAsciiDigit(s[i]) || s[i] == '.'))
            i++;
        if (i == 0 || !double.TryParse(s[..i], NumberStyles.Float, CultureInfo.InvariantCulture, out var number))
            return false;
        long multiplier = s[i..].Trim() switch
        {
            "" or "b" => 1,
            "k" or "kb" or "kib" => 1L << 10,
            "m" or "mb" or "mib" => 1L << 20,
            "g" or "gb" or "gib" => 1L << 30,
            "t" or "tb" or "tib" => 1L << 40,
            _ => 0,
        };
        if (multiplier == 0 || number < 0 || number * multiplier > long.MaxValue)
            return false;
        bytes = (long)(number * multiplier);
        return true;
    }

    public static string Format(long bytes) => bytes switch
    {
        >= 1L << 40 when bytes % (1L << 40) == 0 => $"{bytes >> 40}TiB",
        >= 1L << 30 => (bytes / (double)(1L << 30)).ToString("0.#", CultureInfo.InvariantCulture) + "GiB",
        >= 1L << 20 => (bytes / (double)(1L << 20)).ToString("0.#", CultureInfo.InvariantCulture) + "MiB",
        >= 1L << 10 => (bytes / (double)(1L << 10)).ToString("0.#", CultureInfo.InvariantCulture) + "KiB",
        _ => $"{bytes}B",
    };
}

public static class Durations
{
    public static bool TryParse(string text, out TimeSpan value)
    {
        value = default;
        var s = text.Trim().ToLowerInvariant();
        var i = 0;
        while (i < s.Length && (char.IsAsciiDigit(s[i]) || s[i] == '.'))
            i++;
        if (i == 0 || !double.TryParse(s[..i], NumberStyles.Float, CultureInfo.InvariantCulture, out var number))
            return false;
        double? seconds = s[i..].Trim() switch
        {
            "ms" => number / 1000,
            "" or "s" => number,
            "m" or "min" => number * 60,
            "h" => number * 3600,
            _ => null,
        };
        if (seconds is not double sec)
            return false;
        value = TimeSpan.FromSeconds(sec);
        return true;
    }
}
