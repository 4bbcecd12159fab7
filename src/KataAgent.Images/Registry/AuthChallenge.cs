namespace KataAgent.Images.Registry;

/// <summary>One challenge of a <c>WWW-Authenticate</c> header: a scheme and its parameters (realm, service, scope, error).</summary>
public sealed record AuthChallenge(string Scheme, IReadOnlyDictionary<string, string> Parameters)
{
    public string? Realm => Parameters.GetValueOrDefault("realm");
    public string? Service => Parameters.GetValueOrDefault("service");
    public string? Scope => Parameters.GetValueOrDefault("scope");
    public string? Error => Parameters.GetValueOrDefault("error");

    public bool IsBasic => Scheme.Equals("Basic", StringComparison.OrdinalIgnoreCase);
    public bool IsBearer => Scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Parses a WWW-Authenticate value (RFC 7235): <c>Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull"</c>;
    /// several challenges may follow one another, separated by commas. Quoted strings may hold commas and backslash escapes.
    /// </summary>
    public static IReadOnlyList<AuthChallenge> Parse(string header)
    {
        var result = new List<AuthChallenge>();
        var i = 0;
        string? scheme = null;
        var parameters = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        while (i < header.Length)
        {
            SkipSeparators(header, ref i);
            if (i >= header.Length)
            {
                break;
            }

            var tokenStart = i;
            while (i < header.Length && header[i] is not (' ' or '\t' or ',' or '='))
            {
                i++;
            }

            var token = header[tokenStart..i];
            var j = i;
            while (j < header.Length && header[j] is ' ' or '\t')
            {
                j++;
            }

            if (j < header.Length && header[j] == '=' && scheme is not null && IsToken68End(header, j))
            {
                // a token68 credential blob ("abc==") after the scheme: not a parameter, not a scheme
                i = j;
                while (i < header.Length && header[i] != ',')
                {
                    i++;
                }

                continue;
            }

            if (j < header.Length && header[j] == '=' && scheme is not null)
            {
                // a parameter of the current challenge
                i = j + 1;
                while (i < header.Length && header[i] is ' ' or '\t')
                {
                    i++;
                }

                parameters[token] = ReadValue(header, ref i);
                continue;
            }

            // a new scheme
            if (scheme is not null)
            {
                result.Add(new AuthChallenge(scheme, parameters));
                parameters = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            }

            scheme = token;
            i = j;
            if (i < header.Length && header[i] == '=')
            {
                // token68 right after the scheme: skip it
                while (i < header.Length && header[i] != ',')
                {
                    i++;
                }
            }
        }

        if (scheme is not null)
        {
            result.Add(new AuthChallenge(scheme, parameters));
        }

        return result;
    }

    private static bool IsToken68End(string header, int j)
    {
        while (j < header.Length && header[j] == '=')
        {
            j++;
        }

        return j >= header.Length || header[j] == ',';
    }

    private static void SkipSeparators(string header, ref int i)
    {
        while (i < header.Length && header[i] is ' ' or '\t' or ',')
        {
            i++;
        }
    }

    private static string ReadValue(string header, ref int i)
    {
        if (i < header.Length && header[i] == '"')
        {
            i++;
            var value = new System.Text.StringBuilder();
            while (i < header.Length && header[i] != '"')
            {
                if (header[i] == '\\' && i + 1 < header.Length)
                {
                    i++;
                }

                value.Append(header[i]);
                i++;
            }

            i++; // closing quote
            return value.ToString();
        }

        var start = i;
        while (i < header.Length && header[i] is not (',' or ' ' or '\t'))
        {
            i++;
        }

        return header[start..i];
    }
}
