using System.Globalization;
using System.Text;

namespace KataAgent.BackendAi.Rpc;

/// <summary>
/// An exception as Callosum's FAILURE/ERROR metadata carries it: <c>(type(e).__name__, repr(e), traceback text)</c>.
/// The manager only shows these to people (it rethrows them as AgentError), so they aim to read like Python's.
/// </summary>
internal sealed record PythonStyleError(string Name, string Repr, string Traceback)
{
    public static PythonStyleError From(Exception exception)
    {
        string name = exception switch
        {
            BackendAiRpcException rpc => rpc.PythonName,
            CallosumProtocolException protocol => protocol.PythonName,
            _ => PythonNameOf(exception),
        };
        return From(name, exception.Message, exception);
    }

    public static PythonStyleError From(string name, string message, Exception? exception = null)
    {
        string repr = message.Length == 0 ? $"{name}()" : $"{name}({PythonStringRepr(message)})";
        var traceback = new StringBuilder("Traceback (most recent call last):\n");
        if (exception?.StackTrace is string stack)
            traceback.Append(stack).Append('\n');
        traceback.Append(name).Append(": ").Append(message);
        if (exception is not null && exception is not BackendAiRpcException and not CallosumProtocolException)
            traceback.Append(" (.NET ").Append(exception.GetType().FullName).Append(')');
        for (Exception? inner = exception?.InnerException; inner is not null; inner = inner.InnerException)
        {
            traceback.Append("\n\nThe above exception was caused by:\n").Append(inner.GetType().FullName).Append(": ").Append(inner.Message);
            if (inner.StackTrace is string innerStack)
                traceback.Append('\n').Append(innerStack);
        }
        return new PythonStyleError(name, repr, traceback.Append('\n').ToString());
    }

    /// <summary>The builtin Python exception a .NET one corresponds to; other types keep their .NET name.</summary>
    public static string PythonNameOf(Exception exception) => exception switch
    {
        FileNotFoundException or DirectoryNotFoundException => "FileNotFoundError",
        UnauthorizedAccessException => "PermissionError",
        PathTooLongException or IOException => "OSError",
        KeyNotFoundException => "KeyError",
        ArgumentOutOfRangeException or IndexOutOfRangeException => "IndexError",
        ArgumentException or FormatException => "ValueError",
        InvalidCastException => "TypeError",
        NotImplementedException or NotSupportedException => "NotImplementedError",
        TimeoutException => "TimeoutError",
        OperationCanceledException => "CancelledError",
        OutOfMemoryException => "MemoryError",
        OverflowException or ArithmeticException => "ArithmeticError",
        InvalidOperationException => "RuntimeError",
        _ => exception.GetType().Name,
    };

    /// <summary>Python's <c>repr(str)</c>: single quotes unless the text has one and no double quote.</summary>
    public static string PythonStringRepr(string text)
    {
        char quote = text.Contains('\'', StringComparison.Ordinal) && !text.Contains('"', StringComparison.Ordinal) ? '"' : '\'';
        var repr = new StringBuilder(text.Length + 2).Append(quote);
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c == quote || c == '\\')
            {
                repr.Append('\\').Append(c);
                continue;
            }
            switch (c)
            {
                case '\n': repr.Append("\\n"); continue;
                case '\r': repr.Append("\\r"); continue;
                case '\t': repr.Append("\\t"); continue;
            }
            int codePoint = c;
            int width = 1;
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                codePoint = char.ConvertToUtf32(c, text[i + 1]);
                width = 2;
            }
            if (IsPrintable(text, i))
                repr.Append(text, i, width);
            else if (codePoint < 0x100)
                repr.Append("\\x").Append(codePoint.ToString("x2", CultureInfo.InvariantCulture));
            else if (codePoint < 0x10000)
                repr.Append("\\u").Append(codePoint.ToString("x4", CultureInfo.InvariantCulture));
            else
                repr.Append("\\U").Append(codePoint.ToString("x8", CultureInfo.InvariantCulture));
            i += width - 1;
        }
        return repr.Append(quote).ToString();
    }

    // str.isprintable(): everything except "Other" and "Separator" categories, the ASCII space excepted.
    private static bool IsPrintable(string text, int index)
    {
        if (text[index] == ' ')
            return true;
        return CharUnicodeInfo.GetUnicodeCategory(text, index) switch
        {
            UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse
                or UnicodeCategory.OtherNotAssigned or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator
                or UnicodeCategory.SpaceSeparator => false,
            _ => true,
        };
    }
}
