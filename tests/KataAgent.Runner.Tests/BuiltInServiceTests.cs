using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace KataAgent.Runner.Tests;

/// <summary>The runner's built-in sshd (dropbear) and ttyd, started by name like Backend.AI's agent asks for them.</summary>
[Collection(RunnerCollection.Name)]
public sealed partial class BuiltInServiceTests(PublishedRunner runner)
{
    [SkippableFact]
    public async Task Sshd_is_served_by_dropbear_with_host_keys_in_a_directory_removed_at_stop()
    {
        Skip.If(Find("dropbear") is null || Find("dropbearkey") is null, "dropbear is not installed on this host (apt-get install dropbear-bin)");
        RunnerHost host = await ServiceDefinitionTests.StartWithDefinitionsAsync(runner, []);
        await using (host)
        {
            using RawRunnerLink link = await RawRunnerLink.TakeOverAsync(host, RunnerTestHelpers.Limit());
            int port = RunnerHost.FreePort();

            JsonElement result = await link.StartServiceAsync(new { name = "sshd", port, ports = new[] { port }, protocol = "tcp", options = new { } });
            Assert.True(result.GetProperty("status").GetString() == "started", $"{result}\n{host.Log}");
            Assert.StartsWith("SSH-2.0-dropbear", await ReadBannerAsync(port));
            JsonElement again = await link.StartServiceAsync(new { name = "sshd", port, ports = new[] { port }, protocol = "tcp" });
            Assert.Equal("running", again.GetProperty("status").GetString());

            string stateDirectory = StateDirectory().Match(host.Log).Groups[1].Value;
            Assert.True(Directory.Exists(stateDirectory), host.Log);
            Assert.NotEmpty(Directory.GetFiles(stateDirectory, "dropbear_host_key"));

            Assert.Equal(0, await host.StopAsync(TimeSpan.FromSeconds(60)));
            Assert.False(await ServiceDefinitionTests.AcceptsAsync(port));
            Assert.False(Directory.Exists(stateDirectory), $"{stateDirectory} is left behind");
        }
    }

    // ttyd has no Debian 12 package: a stand-in on the session's PATH records how the runner starts it and serves a page.
    private const string TtydStandIn = """
        #!/usr/bin/python3
        import http.server, os, sys
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'argv.txt'), 'w') as f:
            f.write('\n'.join(sys.argv[1:]))
        port = int(sys.argv[sys.argv.index('-p') + 1])
        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'<html>stand-in ttyd</html>')
            def log_message(self, *args):
                pass
        http.server.HTTPServer(('127.0.0.1', port), Page).serve_forever()
        """;

    [Fact]
    public async Task Ttyd_on_the_path_is_started_on_the_requested_port_with_a_shared_tmux_session()
    {
        string? tmux = Find("tmux");
        Assert.True(tmux is not null, "tmux is missing (scripts/setup.sh installs it)");
        string bin = "";
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
        {
            bin = Directory.CreateDirectory(Path.Combine(prepared.Root, "bin")).FullName;
            File.WriteAllText(Path.Combine(bin, "ttyd"), TtydStandIn);
            File.SetUnixFileMode(Path.Combine(bin, "ttyd"), (UnixFileMode)0b111_101_101);
            File.AppendAllText(Path.Combine(prepared.ConfigDir, "environ.txt"), $"PATH={bin}:/usr/local/bin:/usr/bin:/bin\n");
        });
        using RawRunnerLink link = await RawRunnerLink.TakeOverAsync(host, RunnerTestHelpers.Limit());
        int port = RunnerHost.FreePort();

        JsonElement result = await link.StartServiceAsync(new { name = "ttyd", port, ports = new[] { port }, protocol = "http", options = new { } });
        Assert.True(result.GetProperty("status").GetString() == "started", $"{result}\n{host.Log}");
        Assert.Contains("stand-in ttyd", await ServiceDefinitionTests.GetAsync(port), StringComparison.Ordinal);

        string[] argv = File.ReadAllLines(Path.Combine(bin, "argv.txt"));
        string shell = new[] { "zsh", "bash", "ash" }.FirstOrDefault(candidate => File.Exists($"/bin/{candidate}")) ?? "sh";
        Assert.Equal(["-W", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-i", "127.0.0.1", $"/bin/{shell}", "-c",
            $"export SHELL=/bin/{shell}; exec {tmux} -2 new-session -A -s main"], argv);
        JsonElement again = await link.StartServiceAsync(new { name = "ttyd", port, ports = new[] { port }, protocol = "http" });
        Assert.Equal("running", again.GetProperty("status").GetString());
    }

    [SkippableFact]
    public async Task Ttyd_without_the_program_is_an_unsupported_service()
    {
        Skip.If(Find("ttyd") is not null, "ttyd is installed on this host");
        await using RunnerHost host = await ServiceDefinitionTests.StartWithDefinitionsAsync(runner, []);
        using RawRunnerLink link = await RawRunnerLink.TakeOverAsync(host, RunnerTestHelpers.Limit());

        ServiceDefinitionTests.AssertFailed(await link.StartServiceAsync(new { name = "ttyd", port = RunnerHost.FreePort(), protocol = "http" }),
            "unsupported service: ttyd");
    }

    [GeneratedRegex(@"service files \(host keys, generated config, temp files\) in (\S+)")]
    private static partial Regex StateDirectory();

    private static async Task<string> ReadBannerAsync(int port)
    {
        using var client = new TcpClient();
        await client.ConnectAsync("127.0.0.1", port);
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var buffer = new byte[256];
        var banner = new StringBuilder();
        NetworkStream stream = client.GetStream();
        while (!banner.ToString().Contains('\n', StringComparison.Ordinal))
        {
            int read = await stream.ReadAsync(buffer, limit.Token);
            if (read == 0)
            {
                break;
            }
            banner.Append(Encoding.ASCII.GetString(buffer, 0, read));
        }
        return banner.ToString();
    }

    private static string? Find(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/local/sbin", "/usr/sbin", "/sbin"])
            .Select(directory => Path.Combine(directory, name))
            .FirstOrDefault(File.Exists);
}
