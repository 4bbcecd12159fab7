using System.Text.Json.Nodes;
using KataAgent.Core.Scratch;

namespace KataAgent.Core.Tests.Scratch;

public sealed class ScratchDirectoryTests
{
    private static ScratchConfig SampleConfig() => new()
    {
        Environ = new Dictionary<string, string> { ["PATH"] = "/usr/bin:/bin", ["LANG"] = "C.UTF-8", ["EMPTY"] = "" },
        Resource = new Dictionary<string, string> { ["CID"] = "c1", ["SESSION_ID"] = "s1", ["cpu"] = "2", ["mem"] = "1073741824" },
        Runner = new JsonObject { ["runtime_type"] = "python", ["args"] = new JsonArray("a", 1) },
        Dotfiles = [new ScratchDotfile(".bashrc", "alias ll='ls -l'\n", (UnixFileMode)0x180), new ScratchDotfile("/home/work/.config/x.conf", "k=v", (UnixFileMode)0x1A4)],
    };

    [SkippableFact]
    public async Task Create_lays_out_work_and_config_with_owner_and_files()
    {
        Skip.IfNot(TestLibc.GetEuid() == 0, "needs root to chown the work dir to another user");
        using var sandbox = new ScratchSandbox();
        var scratch = await ScratchDirectory.CreateAsync(sandbox.ScratchRoot, "sess-1", SampleConfig(), 4242, 4343);

        Assert.Equal(Path.Combine(sandbox.ScratchRoot, "sess-1", "work"), scratch.WorkPath);
        Assert.Equal(Path.Combine(sandbox.ScratchRoot, "sess-1", "config"), scratch.ConfigPath);
        var work = await scratch.Files.ListAsync("");
        Assert.Equal([".bashrc", ".config"], work.Select(e => e.Name));
        Assert.Equal((UnixFileMode)0x180, work[0].Mode);
        Assert.Equal("k=v", await File.ReadAllTextAsync(Path.Combine(scratch.WorkPath, ".config", "x.conf")));

        Assert.Equal("EMPTY=\nLANG=C.UTF-8\nPATH=/usr/bin:/bin\n", await File.ReadAllTextAsync(Path.Combine(scratch.ConfigPath, "environ.txt")));
        Assert.Equal("CID=c1\nSESSION_ID=s1\ncpu=2\nmem=1073741824\n", await File.ReadAllTextAsync(Path.Combine(scratch.ConfigPath, "resource.txt")));
        Assert.Equal("""{"replin":2000,"replout":2001}""", await File.ReadAllTextAsync(Path.Combine(scratch.ConfigPath, "intrinsic-ports.json")));
        var runner = JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(scratch.ConfigPath, "runner.json")))!;
        Assert.Equal("python", (string?)runner["runtime_type"]);
        // The session's secrets: 0600, the guest user's (the runner reads them as that user), nobody else's on the host.
        Assert.Equal((UnixFileMode)0x180, File.GetUnixFileMode(Path.Combine(scratch.ConfigPath, "environ.txt")));
        Assert.Equal((4242, 4343), OwnerOf(Path.Combine(scratch.ConfigPath, "environ.txt")));
        Assert.Equal(["environ.txt", "intrinsic-ports.json", "resource.txt", "runner.json"],
            Directory.GetFiles(scratch.ConfigPath).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        // the guest user owns the work dir and whatever the agent puts into it
        Assert.Equal((4242, 4343), OwnerOf(scratch.WorkPath));
        Assert.Equal((0, 0), OwnerOf(scratch.ConfigPath));
        await scratch.Files.UploadAsync("up/f", new MemoryStream([1, 2, 3]), 10, createParents: true);
        Assert.Equal((4242, 4343), OwnerOf(Path.Combine(scratch.WorkPath, "up")));
        Assert.Equal((4242, 4343), OwnerOf(Path.Combine(scratch.WorkPath, "up", "f")));
        Assert.Equal((4242, 4343), OwnerOf(Path.Combine(scratch.WorkPath, ".bashrc")));

        // config files are rewritten atomically (no temp file left over)
        await scratch.WriteConfigFileAsync("resource.txt", "CID=c2\n", (UnixFileMode)0x1A4);
        Assert.Equal("CID=c2\n", await File.ReadAllTextAsync(Path.Combine(scratch.ConfigPath, "resource.txt")));
        Assert.Equal(4, Directory.GetFiles(scratch.ConfigPath).Length);

        // bootstrap.sh goes into the work dir, the guest user's, 0700, where Backend.AI's runner looks for it
        await scratch.WriteWorkFileAsync("bootstrap.sh", "#!/bin/sh\necho boot\n", ScratchDirectory.BootstrapFileMode, (4242, 4343));
        Assert.Equal((UnixFileMode)0x1C0, File.GetUnixFileMode(Path.Combine(scratch.WorkPath, "bootstrap.sh")));
        Assert.Equal((4242, 4343), OwnerOf(Path.Combine(scratch.WorkPath, "bootstrap.sh")));
        Assert.Equal("#!/bin/sh\necho boot\n", await File.ReadAllTextAsync(Path.Combine(scratch.WorkPath, "bootstrap.sh")));
        Assert.DoesNotContain(Directory.GetFiles(scratch.WorkPath), f => f.EndsWith(".tmp", StringComparison.Ordinal));
    }

    private static (int Uid, int Gid) OwnerOf(string path)
    {
        // stat -c keeps the test free of another P/Invoke struct
        var psi = new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%u %g", path]) { RedirectStandardOutput = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        var parts = p.StandardOutput.ReadToEnd().Trim().Split(' ');
        p.WaitForExit();
        return (int.Parse(parts[0]), int.Parse(parts[1]));
    }

    [Theory]
    [InlineData("")]
    [InlineData(".")]
    [InlineData("..")]
    [InlineData(".hidden")]
    [InlineData("a/b")]
    [InlineData("a\0b")]
    [InlineData("-rf")]
    [InlineData("x y")]
    public async Task Invalid_session_ids_are_refused(string sessionId)
    {
        using var sandbox = new ScratchSandbox();
        Assert.False(ScratchDirectory.IsValidSessionId(sessionId));
        await Assert.ThrowsAsync<ArgumentException>(() => ScratchDirectory.CreateAsync(sandbox.ScratchRoot, sessionId, new ScratchConfig(), 0, 0));
        Assert.Throws<ArgumentException>(() => ScratchDirectory.Open(sandbox.ScratchRoot, sessionId));
        Assert.Empty(Directory.EnumerateFileSystemEntries(sandbox.ScratchRoot));
        Assert.True(ScratchDirectory.IsValidSessionId("a" + new string('b', 127)));
        Assert.False(ScratchDirectory.IsValidSessionId("a" + new string('b', 128)));
    }

    [Fact]
    public async Task Create_refuses_an_existing_dir_and_rolls_back_on_bad_config()
    {
        using var sandbox = new ScratchSandbox();
        await ScratchDirectory.CreateAsync(sandbox.ScratchRoot, "dup", new ScratchConfig(), 0, 0);
        await Assert.ThrowsAsync<IOException>(() => ScratchDirectory.CreateAsync(sandbox.ScratchRoot, "dup", new ScratchConfig(), 0, 0));
        Assert.True(Directory.Exists(Path.Combine(sandbox.ScratchRoot, "dup", "work")));

        var bad = new ScratchConfig { Environ = new Dictionary<string, string> { ["A"] = "line\nbreak" } };
        await Assert.ThrowsAsync<ArgumentException>(() => ScratchDirectory.CreateAsync(sandbox.ScratchRoot, "bad", bad, 0, 0));
        Assert.False(Directory.Exists(Path.Combine(sandbox.ScratchRoot, "bad")));
        // environ.txt is KEY=VALUE lines and nothing else: no comment line, no key with blanks.
        foreach (var key in new[] { "#comment", " LEAD", "A B", "" })
        {
            var badKey = new ScratchConfig { Environ = new Dictionary<string, string> { [key] = "v" } };
            await Assert.ThrowsAsync<ArgumentException>(() => ScratchDirectory.CreateAsync(sandbox.ScratchRoot, "badkey", badKey, 0, 0));
            Assert.False(Directory.Exists(Path.Combine(sandbox.ScratchRoot, "badkey")));
        }
        var badDotfile = new ScratchConfig { Dotfiles = [new ScratchDotfile("/etc/profile", "x", (UnixFileMode)0x1A4)] };
        await Assert.ThrowsAsync<ScratchPathException>(() => ScratchDirectory.CreateAsync(sandbox.ScratchRoot, "bad2", badDotfile, 0, 0));
        Assert.False(Directory.Exists(Path.Combine(sandbox.ScratchRoot, "bad2")));
    }

    [Fact]
    public async Task Remove_of_a_hostile_tree_deletes_links_not_targets()
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync();
        using var _ = sandbox;
        var work = scratch.WorkPath;
        File.CreateSymbolicLink(Path.Combine(work, "secret"), sandbox.SecretPath);
        Directory.CreateSymbolicLink(Path.Combine(work, "outside"), sandbox.Outside);
        Directory.CreateSymbolicLink(Path.Combine(work, "outside-sub"), Path.Combine(sandbox.Outside, "sub"));
        File.CreateSymbolicLink(Path.Combine(work, "dangling"), "/nonexistent/x");
        File.CreateSymbolicLink(Path.Combine(work, "loop"), "loop");
        TestLibc.MkFifo(Path.Combine(work, "fifo"));
        TestLibc.TryMkCharDevice(Path.Combine(work, "null"));
        await File.WriteAllTextAsync(Path.Combine(work, "file"), "f");
        TestLibc.Link(Path.Combine(work, "file"), Path.Combine(work, "hardlink"));
        // read-only directories with content, and a link inside them
        var ro = Directory.CreateDirectory(Path.Combine(work, "ro", "inner")).FullName;
        await File.WriteAllTextAsync(Path.Combine(ro, "x"), "x");
        File.CreateSymbolicLink(Path.Combine(ro, "up"), sandbox.Outside);
        File.SetUnixFileMode(ro, (UnixFileMode)0x16D); // 0555
        File.SetUnixFileMode(Path.GetDirectoryName(ro)!, (UnixFileMode)0x140); // 0500
        // nesting far beyond PATH_MAX (2000 levels of "d/"), with a link to outside at every 100th level
        TestLibc.MakeDeepTree(work, 2000, (fd, level) =>
        {
            if (level % 100 == 0)
                TestLibc.SymlinkAt(sandbox.Outside, fd, "escape");
        });

        Assert.False(await scratch.RemoveAsync(keep: true));
        Assert.True(Directory.Exists(work));

        Assert.True(await scratch.RemoveAsync());

        Assert.False(Directory.Exists(scratch.SessionPath));
        Assert.Empty(Directory.EnumerateFileSystemEntries(sandbox.ScratchRoot));
        sandbox.AssertOutsideUntouched();
        Assert.False(await scratch.RemoveAsync()); // idempotent
    }
}
