using System.Text.Json;

namespace KataAgent.Cli.Tests;

/// <summary>`kata-agent run` and friends as a process, with no serve running (the agent runs in the CLI's process).</summary>
public sealed class RunCommandTests(CliEnvironment env) : IClassFixture<CliEnvironment>
{
    [Fact]
    public async Task Run_prints_the_result_exits_0_and_leaves_nothing_running()
    {
        var result = await env.RunAsync("run", "--runtime", "runc", "-c", "print(6*7)");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("42\n", result.Stdout);
        Assert.Empty(env.ProcessesOfThisEnvironment());
        Assert.Empty(env.Netns());
        Assert.Empty(Directory.Exists(Path.Combine(env.DataDir, "scratch")) ? Directory.GetDirectories(Path.Combine(env.DataDir, "scratch")) : []);
    }

    [Fact]
    public async Task Run_exits_with_the_code_exit_code_and_streams_stderr_apart()
    {
        var result = await env.RunAsync("run", "--runtime", "runc", "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)");
        Assert.True(result.ExitCode == 3, result.ToString());
        Assert.Equal("out\n", result.Stdout);
        Assert.Contains("err\n", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_reads_code_from_a_file_and_answers_input_from_stdin()
    {
        var file = Path.Combine(env.Dir, "ask.py");
        await File.WriteAllTextAsync(file, "name = input('who? ')\nprint('hello', name)\n");
        var result = await env.RunWithStdinAsync("kata\n", "run", "--runtime", "runc", file);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("hello kata", result.Stdout, StringComparison.Ordinal);

        var piped = await env.RunWithStdinAsync("print('from stdin')\n", "run", "--runtime", "runc", "-");
        Assert.True(piped.ExitCode == 0, piped.ToString());
        Assert.Equal("from stdin\n", piped.Stdout);
    }

    [Theory]
    [InlineData("run", "--bogus-flag", "-c", "print(1)")]
    [InlineData("run", "--cpu", "many", "-c", "print(1)")]
    [InlineData("session", "frobnicate")]
    [InlineData("run", "-c", "print(1)", "-v", "nocolon")]
    [InlineData("run", "--media-dir", "plots", "--no-media-files", "-c", "print(1)")]
    public async Task A_bad_command_line_is_one_clear_error_line_and_exit_2(params string[] args)
    {
        var result = await env.RunAsync(args);
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal("", result.Stdout);
        Assert.Equal(1, Text.LineCount(result.Stderr));
        Assert.StartsWith("error: ", result.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Session_commands_without_a_serve_say_how_to_start_one()
    {
        var result = await env.RunAsync("session", "ls");
        Assert.Equal(1, result.ExitCode);
        Assert.Equal(1, Text.LineCount(result.Stderr));
        Assert.Contains("kata-agent serve", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_bad_config_value_is_one_line_naming_the_key()
    {
        var bad = Path.Combine(env.Dir, "bad.toml");
        await File.WriteAllTextAsync(bad, "[network]\nport_range_start = 80\n");
        var result = await CliProcess.RunAsync(["--config", bad, "run", "-c", "print(1)"]);
        Assert.Equal(2, result.ExitCode);
        Assert.Equal(1, Text.LineCount(result.Stderr));
        Assert.Contains("network.port_range_start", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Doctor_and_version_print_parsable_json()
    {
        var doctor = await env.RunAsync("doctor", "--json");
        using (var json = JsonDocument.Parse(doctor.Stdout))
        {
            Assert.True(json.RootElement.GetProperty("usable").GetProperty("runc").GetBoolean(), doctor.ToString());
            Assert.Equal((doctor.ExitCode & 4) == 0, json.RootElement.GetProperty("usable").GetProperty("runc").GetBoolean());
            Assert.Contains(json.RootElement.GetProperty("checks").EnumerateArray(), c => c.GetProperty("name").GetString() == "cni bridge");
        }
        var version = await env.RunAsync("version", "--json");
        Assert.True(version.ExitCode == 0, version.ToString());
        using var v = JsonDocument.Parse(version.Stdout);
        Assert.False(string.IsNullOrEmpty(v.RootElement.GetProperty("client").GetString()));
    }

    /// <summary>Media end to end: display() in the session makes the runner send `media`; the CLI writes the files and says where.</summary>
    [Fact]
    public async Task Run_writes_media_output_to_files_and_says_where()
    {
        var mediaDir = Path.Combine(env.Dir, "media-" + Guid.NewGuid().ToString("N")[..6]);
        const string code = """
            class Png:
                def _repr_png_(self):
                    return b'\x89PNG\r\n\x1a\n'
            class Svg:
                def _repr_svg_(self):
                    return '<svg/>'
            display(Png(), Svg())
            """;
        var result = await env.RunAsync("run", "--runtime", "runc", "--media-dir", mediaDir, "-c", code);
        Assert.True(result.ExitCode == 0, result.ToString());

        var files = Directory.GetFiles(mediaDir).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(2, files.Length);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0d, 0x0a, 0x1a, 0x0a], File.ReadAllBytes(files.Single(f => f.EndsWith(".png", StringComparison.Ordinal))));
        Assert.Equal("<svg/>", File.ReadAllText(files.Single(f => f.EndsWith(".svg", StringComparison.Ordinal))));
        Assert.Contains("[media image/png written to " + mediaDir, result.Stderr, StringComparison.Ordinal);

        var off = await env.RunAsync("run", "--runtime", "runc", "--no-media-files", "-c", code);
        Assert.True(off.ExitCode == 0, off.ToString());
        Assert.Contains("[media image/png, 8 bytes]", off.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Help_has_examples()
    {
        foreach (var command in new[] { "run", "session", "image", "doctor", "serve", "session service", "session service start" })
        {
            var help = await env.RunAsync([.. command.Split(' '), "--help"]);
            Assert.True(help.ExitCode == 0, help.ToString());
            Assert.Contains("Examples:", help.Stdout, StringComparison.Ordinal);
        }
    }
}
