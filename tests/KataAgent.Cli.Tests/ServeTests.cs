using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace KataAgent.Cli.Tests;

/// <summary>A `kata-agent serve` process with the CLI's session and image commands against it.</summary>
public sealed class ServeTests(CliEnvironment env) : IClassFixture<CliEnvironment>
{
    private Task<Process> StartServeAsync() => ServeProcess.StartAsync(env);

    private static Task<int> StopAsync(Process serve) => ServeProcess.StopAsync(serve);

    [Fact]
    public async Task Session_flow_through_serve()
    {
        var serve = await StartServeAsync();
        try
        {
            var created = await env.RunAsync("session", "create", "--runtime", "runc", "--max-lifetime", "2h");
            Assert.True(created.ExitCode == 0, created.ToString());
            var id = created.Stdout.Trim();
            Assert.Matches("^[0-9a-zA-Z-]+$", id);

            Assert.Equal(0, (await env.RunAsync("session", "exec", id, "-c", "x = 41")).ExitCode);
            var exec = await env.RunAsync("session", "exec", id, "-c", "print(x + 1)");
            Assert.True(exec.ExitCode == 0, exec.ToString());
            Assert.Equal("42\n", exec.Stdout);
            Assert.Equal(3, (await env.RunAsync("session", "exec", id, "-c", "import sys; sys.exit(3)")).ExitCode);

            var ls = await env.RunAsync("session", "ls", "--json");
            using (var json = JsonDocument.Parse(ls.Stdout))
                Assert.Contains(json.RootElement.GetProperty("sessions").EnumerateArray(), s => s.GetProperty("kernelId").GetString() == id);
            var table = await env.RunAsync("session", "ls");
            Assert.Contains(id, table.Stdout, StringComparison.Ordinal);
            using (var show = JsonDocument.Parse((await env.RunAsync("session", "show", id, "--json")).Stdout))
                Assert.Equal("running", show.RootElement.GetProperty("state").GetString());

            // cp in, use it, cp out (a file, and a directory as a tree).
            var local = Path.Combine(env.Dir, "in.txt");
            await File.WriteAllTextAsync(local, "payload\n");
            var up = await env.RunAsync("session", "cp", local, $"{id}:sub/in.txt");
            Assert.True(up.ExitCode == 0, up.ToString());
            Assert.Equal("PAYLOAD\n", (await env.RunAsync("session", "exec", id, "-c", "print(open('/home/work/sub/in.txt').read().strip().upper())")).Stdout);
            var outFile = Path.Combine(env.Dir, "out.txt");
            Assert.Equal(0, (await env.RunAsync("session", "cp", $"{id}:sub/in.txt", outFile)).ExitCode);
            Assert.Equal("payload\n", await File.ReadAllTextAsync(outFile));
            var outDir = Path.Combine(env.Dir, "outdir");
            Assert.Equal(0, (await env.RunAsync("session", "cp", $"{id}:sub", outDir)).ExitCode);
            Assert.Equal("payload\n", await File.ReadAllTextAsync(Path.Combine(outDir, "in.txt")));
            using (var files = JsonDocument.Parse((await env.RunAsync("session", "files", id, "sub", "--json")).Stdout))
                Assert.Contains(files.RootElement.GetProperty("entries").EnumerateArray(), e => e.GetProperty("name").GetString() == "in.txt");

            using (var stats = JsonDocument.Parse((await env.RunAsync("session", "stats", id, "--json")).Stdout))
                Assert.Equal(id, stats.RootElement.GetProperty("kernelId").GetString());
            Assert.Equal(0, (await env.RunAsync("session", "logs", id)).ExitCode);

            // pause | resume: shown in stats, an exec in between refused saying why, the interpreter state kept.
            var pause = await env.RunAsync("session", "pause", id);
            Assert.True(pause.ExitCode == 0, pause.ToString());
            Assert.Equal($"{id} paused\n", pause.Stdout);
            using (var stats = JsonDocument.Parse((await env.RunAsync("session", "stats", id, "--json")).Stdout))
                Assert.Equal("paused", stats.RootElement.GetProperty("state").GetString());
            var refused = await env.RunAsync("session", "exec", id, "-c", "print(x)");
            Assert.NotEqual(0, refused.ExitCode);
            Assert.Contains("is paused", refused.Stderr, StringComparison.Ordinal);
            var resume = await env.RunAsync("session", "resume", id);
            Assert.True(resume.ExitCode == 0, resume.ToString());
            Assert.Equal($"{id} running\n", resume.Stdout);
            Assert.Equal("41\n", (await env.RunAsync("session", "exec", id, "-c", "print(x)")).Stdout);

            // extend: the lifetime deadline moves by exactly --by; a bad --by is refused before any call.
            var extend = await env.RunAsync("session", "extend", id, "--by", "1h", "--json");
            Assert.True(extend.ExitCode == 0, extend.ToString());
            using (var before = JsonDocument.Parse(extend.Stdout))
            {
                var first = before.RootElement.GetProperty("lifetimeDeadline").GetDateTimeOffset();
                using var after = JsonDocument.Parse((await env.RunAsync("session", "extend", id, "--by", "30m", "--json")).Stdout);
                Assert.Equal(first + TimeSpan.FromMinutes(30), after.RootElement.GetProperty("lifetimeDeadline").GetDateTimeOffset());
            }
            var badBy = await env.RunAsync("session", "extend", id, "--by", "0s");
            Assert.Equal(2, badBy.ExitCode);
            Assert.Contains("--by", badBy.Stderr, StringComparison.Ordinal);

            using (var images = JsonDocument.Parse((await env.RunAsync("image", "ls", "--json")).Stdout))
                Assert.Contains(images.RootElement.GetProperty("images").EnumerateArray(), i => i.GetProperty("name").GetString() == "kata-agent/python:3-bookworm");
            using (var version = JsonDocument.Parse((await env.RunAsync("version", "--json")).Stdout))
                Assert.False(string.IsNullOrEmpty(version.RootElement.GetProperty("containerd").GetString()));

            // `run` uses the serve when one is there, and leaves no session behind.
            var run = await env.RunAsync("run", "--runtime", "runc", "-c", "print('via serve')");
            Assert.True(run.ExitCode == 0, run.ToString());
            Assert.Equal("via serve\n", run.Stdout);

            var rm = await env.RunAsync("session", "rm", id);
            Assert.True(rm.ExitCode == 0, rm.ToString());
            // Removed, but remembered (a tombstone): show says how it ended, other commands fail saying so in one line.
            var ended = await env.RunAsync("session", "show", id);
            Assert.True(ended.ExitCode == 0, ended.ToString());
            Assert.Matches(@"ended\s+ended \d+s ago: destroyed \(by api\)", ended.Stdout);
            Assert.Contains("destroyed", ended.Stdout, StringComparison.Ordinal);
            var missing = await env.RunAsync("session", "exec", id, "-c", "print(1)");
            Assert.Equal(1, missing.ExitCode);
            Assert.Equal(1, Text.LineCount(missing.Stderr));
            Assert.Contains("ago: destroyed (by api)", missing.Stderr, StringComparison.Ordinal);
            // ls leaves it out; ls --ended lists it with how and when it ended.
            Assert.DoesNotContain(id, (await env.RunAsync("session", "ls")).Stdout, StringComparison.Ordinal);
            var lsEnded = await env.RunAsync("session", "ls", "--ended");
            Assert.True(lsEnded.ExitCode == 0, lsEnded.ToString());
            Assert.Matches(Regex.Escape(id) + @".*ended \d+s ago: destroyed \(by api\)", lsEnded.Stdout);
            using (var endedJson = JsonDocument.Parse((await env.RunAsync("session", "ls", "--ended", "--json")).Stdout))
            {
                Assert.Contains(endedJson.RootElement.GetProperty("sessions").EnumerateArray(),
                    s => s.GetProperty("kernelId").GetString() == id && s.GetProperty("endReason").GetProperty("kind").GetString() == "destroyed");
            }

        }
        finally
        {
            Assert.Equal(0, await StopAsync(serve));
        }
        Assert.False(File.Exists(env.SocketPath), "serve removes its socket");
    }

    [Fact]
    public async Task Sessions_survive_a_serve_restart()
    {
        var serve = await StartServeAsync();
        string survivor;
        try
        {
            survivor = (await env.RunAsync("session", "create", "--runtime", "runc")).Stdout.Trim();
            Assert.Equal(0, (await env.RunAsync("session", "exec", survivor, "-c", "y = 'kept'")).ExitCode);
        }
        finally
        {
            Assert.Equal(0, await StopAsync(serve));
        }

        // A new serve recovers the session left running, interpreter state and all.
        serve = await StartServeAsync();
        try
        {
            using (var ls = JsonDocument.Parse((await env.RunAsync("session", "ls", "--json")).Stdout))
            {
                var session = Assert.Single(ls.RootElement.GetProperty("sessions").EnumerateArray(), s => s.GetProperty("kernelId").GetString() == survivor);
                Assert.Equal("running", session.GetProperty("state").GetString());
            }
            var exec = await env.RunAsync("session", "exec", survivor, "-c", "print(y)");
            Assert.True(exec.ExitCode == 0, exec.ToString());
            Assert.Equal("kept\n", exec.Stdout);
            Assert.Equal(0, (await env.RunAsync("session", "rm", survivor)).ExitCode);
            using var empty = JsonDocument.Parse((await env.RunAsync("session", "ls", "--json")).Stdout);
            Assert.Equal(0, empty.RootElement.GetProperty("sessions").GetArrayLength());
        }
        finally
        {
            Assert.Equal(0, await StopAsync(serve));
        }
    }
}
