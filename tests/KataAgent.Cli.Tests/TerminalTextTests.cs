using KataAgent.Cli.Config;

namespace KataAgent.Cli.Tests;

/// <summary>Issue 13: guest-controlled text cannot steer the user's terminal.</summary>
public sealed class TerminalTextTests
{
    [Theory]
    // OSC title/clipboard (OSC 52), cursor up + erase line (a forged earlier line), a newline that forges a row, a bell.
    [InlineData("x\u001b]0;pwned\u0007", @"x\x1b]0;pwned\x07")]
    [InlineData("\u001b]52;c;cm0gLXJmIH4=\u0007", @"\x1b]52;c;cm0gLXJmIH4=\x07")]
    [InlineData("a\u001b[1A\u001b[2Kb", @"a\x1b[1A\x1b[2Kb")]
    [InlineData("evil\nroot.txt\tx", @"evil\x0aroot.txt\x09x")]
    [InlineData("c1\u009b31m", @"c1\x9b31m")]
    // A right-to-left override makes "exe.txt" read as "txt.exe"; a backslash is doubled so escapes stay unambiguous.
    [InlineData("\u202etxt.exe", @"\u202etxt.exe")]
    [InlineData(@"a\x1b", @"a\\x1b")]
    [InlineData("plain-name_1.txt", "plain-name_1.txt")]
    [InlineData("ünïcödé 名前", "ünïcödé 名前")]
    public void Names_show_every_control_character_escaped(string name, string shown)
    {
        Assert.Equal(shown, TerminalText.Name(name));
        Assert.DoesNotContain(TerminalText.Name(name), c => c < 0x20 || c is >= '\u007f' and <= '\u009f' || c is >= '\u202a' and <= '\u202e');
    }

    [Theory]
    [InlineData("line 1\nline 2\ttab\r 50%\r100%\n", "line 1\nline 2\ttab\r 50%\r100%\n")]
    [InlineData("\u001b[31mred\u001b[0m \u001b[1;32mbold green\u001b[m", "\u001b[31mred\u001b[0m \u001b[1;32mbold green\u001b[m")]
    [InlineData("\u001b]0;title\u0007", @"\x1b]0;title\x07")]
    [InlineData("\u001b[2J\u001b[H", @"\x1b[2J\x1b[H")]
    [InlineData("\u001b[6n", @"\x1b[6n")]
    [InlineData("half \u001b[3", @"half \x1b[3")]
    [InlineData("\u0008\u0008ok", @"\x08\x08ok")]
    public void Run_output_keeps_lines_and_colours_and_escapes_the_rest(string output, string shown)
    {
        Assert.Equal(shown, TerminalText.Output(output));
    }

    [Fact]
    public void Run_output_is_escaped_only_on_a_terminal_without_raw()
    {
        Assert.True(TerminalText.ShouldEscape(toTerminal: true, raw: false));
        Assert.False(TerminalText.ShouldEscape(toTerminal: true, raw: true));
        Assert.False(TerminalText.ShouldEscape(toTerminal: false, raw: false));
    }
}

/// <summary>runtime.allowed_classes: runc is opt-in, and the default class must be allowed.</summary>
public sealed class AllowedClassesConfigTests
{
    private static readonly Dictionary<string, string> NoEnvironment = new(StringComparer.Ordinal);

    [Fact]
    public void Production_default_allows_kata_and_gvisor_only()
    {
        Assert.Equal(["kata", "gvisor"], KataAgentConfig.Parse(null, null, NoEnvironment).Agent.AllowedRuntimeClasses);
        var dev = KataAgentConfig.Parse("[runtime]\nallowed_classes = [\"kata\", \"gvisor\", \"runc\"]\ndefault_class = \"runc\"", "t.toml", NoEnvironment);
        Assert.Equal(["kata", "gvisor", "runc"], dev.Agent.AllowedRuntimeClasses);
        var fromEnvironment = KataAgentConfig.Parse(null, null, new Dictionary<string, string>(StringComparer.Ordinal) { ["KATA_AGENT_RUNTIME_ALLOWED_CLASSES"] = "gvisor,runc", ["KATA_AGENT_RUNTIME_DEFAULT_CLASS"] = "gvisor" });
        Assert.Equal(["gvisor", "runc"], fromEnvironment.Agent.AllowedRuntimeClasses);
    }

    [Theory]
    [InlineData("[runtime]\ndefault_class = \"runc\"", "runtime.default_class 'runc' is not in runtime.allowed_classes")]
    [InlineData("[runtime]\nallowed_classes = [\"kata\", \"docker\"]", "'docker' is not a runtime class")]
    [InlineData("[runtime]\nallowed_classes = []", "runtime.allowed_classes")]
    public void A_bad_list_or_a_default_outside_it_is_refused_naming_the_key(string toml, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => KataAgentConfig.Parse(toml, "t.toml", NoEnvironment));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Doctor_warns_loudly_when_runc_is_the_only_allowed_class_that_works()
    {
        var options = new Core.AgentOptions { AllowedRuntimeClasses = ["kata", "gvisor", "runc"] };
        Assert.Contains("runc is the only allowed runtime class", Commands.DoctorCommand.RuncOnlyWarning(options, exit: 1 | 2), StringComparison.Ordinal);
        Assert.Null(Commands.DoctorCommand.RuncOnlyWarning(options, exit: 1));
        Assert.Null(Commands.DoctorCommand.RuncOnlyWarning(new Core.AgentOptions(), exit: 1 | 2));
    }
}
