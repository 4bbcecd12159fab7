using System.Globalization;
using System.Text;

namespace KataAgent.Cli;

/// <summary>
/// Guest-controlled text on the user's terminal. A file name, link target or log line from a session is the guest's
/// choice, and a terminal obeys escape sequences in what it prints: retitling the window, moving the cursor to
/// rewrite earlier lines (a forged prompt or error), OSC 52 (writing the clipboard), hiding text, or right-to-left
/// overrides that make a name read as another. So names are always printed with such characters escaped; a run's
/// output keeps its line structure and colours on a terminal and is passed byte for byte only with --raw or to a
/// pipe/file (where nothing interprets it). docs/HOST_HARDENING.md describes the rules.
/// </summary>
internal static class TerminalText
{
    /// <summary>
    /// A name for display: every C0/C1 control character (newline and tab too: one name, one line), DEL, and the
    /// Unicode bidirectional controls become visible escapes (\x1b, \u202e); a backslash is doubled so an escape is unambiguous.
    /// </summary>
    public static string Name(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!text.Any(c => c == '\\' || IsControl(c) || IsBidiControl(c)))
            return text;
        var result = new StringBuilder(text.Length + 8);
        foreach (var c in text)
        {
            if (c == '\\')
                result.Append(@"\\");
            else if (IsControl(c) || IsBidiControl(c))
                AppendEscape(result, c);
            else
                result.Append(c);
        }
        return result.ToString();
    }

    /// <summary>
    /// Program output for a terminal: newline, tab and carriage return (progress bars) pass, and SGR colour sequences
    /// (ESC [ digits/; m); every other control character, ESC included, becomes a visible escape. A colour sequence
    /// split across two chunks is escaped (it only loses its colour).
    /// </summary>
    public static string Output(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = new StringBuilder(text.Length);
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (c == '\x1b' && SgrLength(text, i) is var length and > 0)
            {
                result.Append(text, i, length);
                i += length - 1;
            }
            else if (c is '\n' or '\t' or '\r' || !(IsControl(c) || IsBidiControl(c)))
            {
                result.Append(c);
            }
            else
            {
                AppendEscape(result, c);
            }
        }
        return result.ToString();
    }

    /// <summary>Whether a run's output goes out escaped: only to a terminal, and not when the user asked for --raw.</summary>
    public static bool ShouldEscape(bool toTerminal, bool raw) => toTerminal && !raw;

    private static int SgrLength(string text, int start)
    {
        if (start + 1 >= text.Length || text[start + 1] != '[')
            return 0;
        for (var i = start + 2; i < text.Length && i - start < 64; i++)
        {
            var c = text[i];
            if (c == 'm')
                return i - start + 1;
            if (c is not ((>= '0' and <= '9') or ';' or ':'))
                return 0;
        }
        return 0;
    }

    private static bool IsControl(char c) => c < 0x20 || c is >= '\x7f' and <= '\x9f';

    private static bool IsBidiControl(char c) => c is '\u061c' or '\u200e' or '\u200f' or (>= '\u202a' and <= '\u202e') or (>= '\u2066' and <= '\u2069');

    private static void AppendEscape(StringBuilder result, char c) =>
        result.Append(c <= '\xff' ? "\\x" + ((int)c).ToString("x2", CultureInfo.InvariantCulture) : "\\u" + ((int)c).ToString("x4", CultureInfo.InvariantCulture));
}
