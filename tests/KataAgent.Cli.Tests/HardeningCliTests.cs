using System.Text.Json;
using KataAgent.Images;

namespace KataAgent.Cli.Tests;

public sealed class HardeningCliEnvironment : CliEnvironment;

/// <summary>Issue 13 through the CLI and a real serve: guest-made names cannot steer the terminal; an archive cannot take over the base image.</summary>
public sealed class HardeningCliTests(HardeningCliEnvironment env) : IClassFixture<HardeningCliEnvironment>
{
    private const string BaseImage = "kata-agent/python:3-bookworm";

    [Fact]
    public async Task Guest_file_names_and_link_targets_are_escaped_and_an_archive_cannot_take_over_the_base_image()
    {
        var serve = await ServeProcess.StartAsync(env);
        try
        {
            var id = (await env.RunAsync("session", "create", "--runtime", "runc")).Stdout.Trim();
            // The guest names a file and a link with terminal escapes: a window title, a screen clear, an OSC 52 clipboard write.
            var made = await env.RunAsync("session", "exec", id, "-c",
                "import os\nopen('/home/work/evil\\x1b]52;c;cm0gLXJmIH4=\\x07', 'w').close()\nos.symlink('\\x1b]0;pwned\\x07', '/home/work/link\\x1b[2J')\nprint('made')");
            Assert.True(made.ExitCode == 0 && made.Stdout == "made\n", made.ToString());
            var listing = await env.RunAsync("session", "files", id);
            Assert.True(listing.ExitCode == 0, listing.ToString());
            Assert.DoesNotContain('\u001b', listing.Stdout);
            Assert.DoesNotContain('\u0007', listing.Stdout);
            Assert.Contains(@"evil\x1b]52;c;cm0gLXJmIH4=\x07", listing.Stdout, StringComparison.Ordinal);
            Assert.Contains(@"link\x1b[2J -> \x1b]0;pwned\x07", listing.Stdout, StringComparison.Ordinal);
            // --json keeps the exact names; run output to a pipe stays byte for byte (nothing interprets it there).
            Assert.Contains("evil\\u001B]52", (await env.RunAsync("session", "files", id, "--json")).Stdout, StringComparison.OrdinalIgnoreCase);
            Assert.Equal("\u001b]0;t\u0007\n", (await env.RunAsync("session", "exec", id, "-c", "print('\\x1b]0;t\\x07')")).Stdout);
            Assert.Equal(0, (await env.RunAsync("session", "rm", id)).ExitCode);

            // An archive named as the base image (here: the busybox image) is refused, and the base image stays as it was.
            string Digest(string output)
            {
                using var json = JsonDocument.Parse(output);
                return json.RootElement.GetProperty("images").EnumerateArray().Single(i => i.GetProperty("name").GetString() == BaseImage).GetProperty("digest").GetString()!;
            }
            var before = Digest((await env.RunAsync("image", "ls", "--json")).Stdout);
            var busybox = await new BaseImageBuilder().BuildBusyboxAsync();
            var refused = await env.RunAsync("image", "import", "--name", BaseImage, busybox.ArchivePath);
            Assert.True(refused.ExitCode != 0, refused.ToString());
            Assert.Contains($"'{BaseImage}' already exists", refused.Stderr, StringComparison.Ordinal);
            Assert.Contains("--replace", refused.Stderr, StringComparison.Ordinal);
            Assert.Equal(before, Digest((await env.RunAsync("image", "ls", "--json")).Stdout));
            // With --replace the caller means it.
            var replaced = await env.RunAsync("image", "import", "--replace", "--name", BaseImage, busybox.ArchivePath);
            Assert.True(replaced.ExitCode == 0, replaced.ToString());
            Assert.NotEqual(before, Digest((await env.RunAsync("image", "ls", "--json")).Stdout));
        }
        finally
        {
            Assert.Equal(0, await ServeProcess.StopAsync(serve));
        }
    }
}
