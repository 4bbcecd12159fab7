using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace KataAgent.Runner.Services;

/// <summary>
/// The placeholder language of Backend.AI service definitions, which is Python's <c>str.format_map</c>
/// over a table of variables (<c>runtime_path</c>, <c>ports</c>, and what earlier prestart actions
/// stored under their <c>ref</c>).
/// <para>
/// Two entry points, as in Backend.AI: prestart action arguments are plain format strings
/// (<see cref="Format"/>: <c>{{</c> and <c>}}</c> are literal braces, any other brace opens a
/// field), while the command and env of a definition go through <see cref="Interpolate"/>, which only
/// replaces <c>${{ expr }}</c> and <c>{expr}</c> not preceded by <c>$</c> or <c>{</c>, so shell
/// text such as <c>${HOME}</c> survives.
/// </para>
/// Values are strings, integers, booleans, null, lists and string-keyed maps; they print as Python
/// prints them (<c>None</c>, <c>[8080, 8081]</c>, <c>{'out': '...'}</c>).
/// </summary>
internal static partial class TemplateFormatter
{
    /// <summary>Fills every field of a Python format string.</summary>
    /// <exception cref="TemplateException">an unknown variable, a bad index, or malformed braces.</exception>
    public static string Format(string template, IReadOnlyDictionary<string, object?> variables)
    {
        var output = new StringBuilder(template.Length);
        int position = 0;
        while (position < template.Length)
        {
            char current = template[position];
            if (current == '}')
            {
                if (position + 1 < template.Length && template[position + 1] == '}')
                {
                    output.Append('}');
                    position += 2;
                    continue;
                }
                throw new TemplateException($"single '}}' in \"{template}\"");
            }
            if (current != '{')
            {
                output.Append(current);
                position++;
                continue;
            }
            if (position + 1 < template.Length && template[position + 1] == '{')
            {
                output.Append('{');
                position += 2;
                continue;
            }
            int end = FindFieldEnd(template, position + 1);
            output.Append(FormatField(template[(position + 1)..end], variables, template));
            position = end + 1;
        }
        return output.ToString();
    }

    /// <summary>Replaces the <c>${{ expr }}</c> and <c>{expr}</c> placeholders of one command-line part or env entry.</summary>
    public static string Interpolate(string part, IReadOnlyDictionary<string, object?> variables)
    {
        var output = new StringBuilder(part.Length);
        int last = 0;
        foreach (Match match in Placeholder().Matches(part))
        {
            output.Append(part, last, match.Index - last);
            Group expression = match.Groups["github"].Success ? match.Groups["github"] : match.Groups["python"];
            output.Append(Format("{" + expression.Value + "}", variables));
            last = match.Index + match.Length;
        }
        output.Append(part, last, part.Length - last);
        return output.ToString();
    }

    // ${{ expr }} (GitHub-Actions style), or {expr} (Python style) unless right after '$' or '{'.
    // Both take the shortest expression up to the first closing brace(s), whitespace trimmed.
    [GeneratedRegex(@"\$\{\{\s*(?<github>.*?)\s*\}\}|(?<![${])\{\s*(?<python>.*?)\s*\}")]
    private static partial Regex Placeholder();

    /// <summary>The index of the '}' closing the field that starts at <paramref name="start"/>.</summary>
    private static int FindFieldEnd(string template, int start)
    {
        int depth = 1;
        bool inSpec = false;
        for (int index = start; index < template.Length; index++)
        {
            switch (template[index])
            {
                case '[' when !inSpec:
                    int close = template.IndexOf(']', index + 1);
                    if (close < 0)
                    {
                        throw new TemplateException($"missing ']' in \"{template}\"");
                    }
                    index = close;
                    break;
                case ':' or '!' when depth == 1:
                    inSpec = true;
                    break;
                case '{':
                    depth++;
                    break;
                case '}':
                    if (--depth == 0)
                    {
                        return index;
                    }
                    break;
            }
        }
        throw new TemplateException($"unclosed '{{' in \"{template}\"");
    }

    private static string FormatField(string field, IReadOnlyDictionary<string, object?> variables, string template)
    {
        if (field.Contains('{', StringComparison.Ordinal))
        {
            throw new TemplateException($"nested fields are not supported: {{{field}}} in \"{template}\"");
        }
        // field_name ["!" conversion] [":" format_spec]; brackets in the name may hold ':' or '!'.
        int nameEnd = 0;
        while (nameEnd < field.Length && field[nameEnd] is not ('!' or ':'))
        {
            if (field[nameEnd] == '[')
            {
                int close = field.IndexOf(']', nameEnd);
                nameEnd = close >= 0 ? close + 1 : throw new TemplateException($"missing ']' in {{{field}}}");
            }
            else
            {
                nameEnd++;
            }
        }
        string name = field[..nameEnd];
        char conversion = '\0';
        string spec = "";
        int rest = nameEnd;
        if (rest < field.Length && field[rest] == '!')
        {
            // Exactly one conversion character, then the end or ':'.
            if (rest + 1 >= field.Length || (rest + 2 < field.Length && field[rest + 2] != ':'))
            {
                throw new TemplateException($"bad conversion in {{{field}}}: expected !s, !r or !a");
            }
            conversion = field[rest + 1];
            rest += 2;
        }
        if (rest < field.Length)
        {
            spec = field[(rest + 1)..];
        }
        object? value = Resolve(name, variables, field);
        string text = conversion switch
        {
            '\0' or 's' => PythonStr(value),
            'r' => PythonRepr(value, asciiOnly: false),
            'a' => PythonRepr(value, asciiOnly: true),
            _ => throw new TemplateException($"unknown conversion '!{conversion}' in {{{field}}}"),
        };
        if (spec.Length == 0)
        {
            return text;
        }
        return conversion == '\0' ? ApplySpec(value, spec, field) : ApplySpec(text, spec, field);
    }

    /// <summary>Python's field name: a variable, then any number of <c>[index]</c> / <c>.attribute</c>.</summary>
    private static object? Resolve(string name, IReadOnlyDictionary<string, object?> variables, string field)
    {
        int position = 0;
        while (position < name.Length && name[position] is not ('[' or '.'))
        {
            position++;
        }
        string root = name[..position];
        if (root.Length == 0 || root.All(char.IsAsciiDigit))
        {
            throw new TemplateException($"positional field {{{field}}}: only named variables are available");
        }
        if (!variables.TryGetValue(root, out object? value))
        {
            throw new TemplateException($"unknown variable '{root}' in {{{field}}} (known: {string.Join(", ", variables.Keys.Order(StringComparer.Ordinal))})");
        }
        while (position < name.Length)
        {
            if (name[position] == '.')
            {
                throw new TemplateException($"attribute access is not supported in {{{field}}}");
            }
            if (name[position] != '[')
            {
                throw new TemplateException($"only '.' or '[' may follow ']' in {{{field}}}");
            }
            int close = name.IndexOf(']', position);
            string key = name[(position + 1)..close];
            position = close + 1;
            if (key.Length == 0)
            {
                throw new TemplateException($"empty index in {{{field}}}");
            }
            bool numeric = key.All(char.IsAsciiDigit);
            value = value switch
            {
                IReadOnlyList<object?> list when numeric => int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int index) && index < list.Count
                    ? list[index] : throw new TemplateException($"index {key} is out of range in {{{field}}} ({list.Count} item(s))"),
                string text when numeric => int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int index) && index < text.Length
                    ? text[index].ToString() : throw new TemplateException($"index {key} is out of range in {{{field}}}"),
                IReadOnlyDictionary<string, object?> map when !numeric => map.TryGetValue(key, out object? item)
                    ? item : throw new TemplateException($"no key '{key}' in {{{field}}}"),
                _ => throw new TemplateException($"cannot index {PythonTypeName(value)} with [{key}] in {{{field}}}"),
            };
        }
        return value;
    }

    /// <summary>A subset of Python's format-spec mini-language: [[fill]align][sign][0][width][type] for strings and integers.</summary>
    private static string ApplySpec(object? value, string spec, string field)
    {
        Match parsed = FormatSpec().Match(spec);
        if (!parsed.Success)
        {
            throw new TemplateException($"unsupported format spec ':{spec}' in {{{field}}}");
        }
        char fill = parsed.Groups["fill"].Success ? parsed.Groups["fill"].Value[0] : ' ';
        char align = parsed.Groups["align"].Success ? parsed.Groups["align"].Value[0] : '\0';
        string sign = parsed.Groups["sign"].Value;
        bool zero = parsed.Groups["zero"].Success;
        int width = parsed.Groups["width"].Success ? int.Parse(parsed.Groups["width"].Value, CultureInfo.InvariantCulture) : 0;
        string type = parsed.Groups["type"].Value;
        string body;
        string prefix = "";
        if (value is long or int && type is "" or "d" or "x" or "X" or "o" or "b" or "n")
        {
            long number = Convert.ToInt64(value, CultureInfo.InvariantCulture);
            ulong magnitude = number < 0 ? (ulong)(-(number + 1)) + 1 : (ulong)number;
            body = type switch
            {
                "x" => magnitude.ToString("x", CultureInfo.InvariantCulture),
                "X" => magnitude.ToString("X", CultureInfo.InvariantCulture),
                "o" => Convert.ToString((long)magnitude, 8),
                "b" => Convert.ToString((long)magnitude, 2),
                _ => magnitude.ToString(CultureInfo.InvariantCulture),
            };
            prefix = number < 0 ? "-" : sign is "+" ? "+" : sign is " " ? " " : "";
            if (zero && align == '\0')
            {
                fill = '0';
                align = '=';
            }
            if (align == '\0')
            {
                align = '>';
            }
        }
        else if (value is string or null or bool or IReadOnlyList<object?> or IReadOnlyDictionary<string, object?> && type is "" or "s" && sign.Length == 0)
        {
            if (value is not string && type == "s")
            {
                throw new TemplateException($"format spec ':{spec}' needs a string in {{{field}}}, not {PythonTypeName(value)}");
            }
            body = PythonStr(value);
            if (zero && align == '\0')
            {
                fill = '0';
            }
            if (align == '\0')
            {
                align = '<';
            }
        }
        else
        {
            throw new TemplateException($"format spec ':{spec}' does not apply to {PythonTypeName(value)} in {{{field}}}");
        }
        int padding = Math.Max(0, width - prefix.Length - body.Length);
        return align switch
        {
            '<' => prefix + body + new string(fill, padding),
            '^' => new string(fill, padding / 2) + prefix + body + new string(fill, padding - padding / 2),
            '=' => prefix + new string(fill, padding) + body,
            _ => new string(fill, padding) + prefix + body,
        };
    }

    [GeneratedRegex(@"^(?:(?<fill>.)?(?<align>[<>=^]))?(?<sign>[-+ ])?(?<zero>0)?(?<width>[0-9]+)?(?<type>[sdxXobn])?$", RegexOptions.Singleline)]
    private static partial Regex FormatSpec();

    /// <summary>What Python's str() prints for the value.</summary>
    public static string PythonStr(object? value) => value switch
    {
        null => "None",
        string text => text,
        bool flag => flag ? "True" : "False",
        int or long => Convert.ToString(value, CultureInfo.InvariantCulture)!,
        _ => PythonRepr(value, asciiOnly: false),
    };

    /// <summary>What Python's repr() (or ascii()) prints for the value.</summary>
    public static string PythonRepr(object? value, bool asciiOnly) => value switch
    {
        string text => QuoteString(text, asciiOnly),
        IReadOnlyList<object?> list => "[" + string.Join(", ", list.Select(item => PythonRepr(item, asciiOnly))) + "]",
        IReadOnlyDictionary<string, object?> map => "{" + string.Join(", ", map.Select(pair => QuoteString(pair.Key, asciiOnly) + ": " + PythonRepr(pair.Value, asciiOnly))) + "}",
        _ => PythonStr(value),
    };

    private static string QuoteString(string text, bool asciiOnly)
    {
        char quote = text.Contains('\'', StringComparison.Ordinal) && !text.Contains('"', StringComparison.Ordinal) ? '"' : '\'';
        var output = new StringBuilder(text.Length + 2).Append(quote);
        foreach (Rune rune in text.EnumerateRunes())
        {
            int code = rune.Value;
            string? escaped = code switch
            {
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                _ when code == quote => "\\" + quote,
                < 0x20 or 0x7f => $"\\x{code:x2}",
                > 0x7f when asciiOnly || !IsPrintable(rune) => code <= 0xff ? $"\\x{code:x2}" : code <= 0xffff ? $"\\u{code:x4}" : $"\\U{code:x8}",
                _ => null,
            };
            if (escaped is null)
            {
                output.Append(rune.ToString());
            }
            else
            {
                output.Append(escaped);
            }
        }
        return output.Append(quote).ToString();
    }

    /// <summary>Python's str.isprintable() for one character: not a control, format, separator (but space) or unassigned one.</summary>
    private static bool IsPrintable(Rune rune) => Rune.GetUnicodeCategory(rune) is not (UnicodeCategory.Control or UnicodeCategory.Format
        or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator or UnicodeCategory.SpaceSeparator
        or UnicodeCategory.OtherNotAssigned or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse);

    private static string PythonTypeName(object? value) => value switch
    {
        null => "None",
        string => "a string",
        bool => "a bool",
        int or long => "an integer",
        IReadOnlyList<object?> => "a list",
        IReadOnlyDictionary<string, object?> => "a dict",
        _ => value.GetType().Name,
    };
}

/// <summary>A placeholder that cannot be filled; the message names the placeholder and the problem.</summary>
internal sealed class TemplateException(string message) : Exception(message);
