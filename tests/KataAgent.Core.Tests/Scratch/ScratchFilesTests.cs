using System.Formats.Tar;
using KataAgent.Core.Scratch;

namespace KataAgent.Core.Tests.Scratch;

public sealed class ScratchFilesTests
{
    public static TheoryData<ScratchPathResolution> Resolutions => new() { ScratchPathResolution.Auto, ScratchPathResolution.ComponentWalk };

    private static async Task<byte[]> ReadAllAsync(Stream stream)
    {
        await using (stream)
        {
            var copy = new MemoryStream();
            await stream.CopyToAsync(copy);
            return copy.ToArray();
        }
    }

    private static Task<long> UploadTextAsync(ScratchFiles files, string path, string text, bool createParents = false) =>
        files.UploadAsync(path, new MemoryStream(System.Text.Encoding.UTF8.GetBytes(text)), 1 << 20, createParents);

    [Theory]
    [MemberData(nameof(Resolutions))]
    public async Task Upload_download_list_round_trip_one_mebibyte_byte_exact(ScratchPathResolution resolution)
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync(resolution);
        using var _ = sandbox;
        var data = new byte[1 << 20];
        new Random(42).NextBytes(data);

        var written = await scratch.Files.UploadAsync("a/b/data.bin", new MemoryStream(data), data.Length, createParents: true);

        Assert.Equal(data.Length, written);
        Assert.Equal(data, await ReadAllAsync(await scratch.Files.OpenDownloadAsync("a/b/data.bin")));
        Assert.Equal(data, await File.ReadAllBytesAsync(Path.Combine(scratch.WorkPath, "a", "b", "data.bin")));
        var entry = Assert.Single(await scratch.Files.ListAsync("a/b"));
        Assert.Equal(("data.bin", ScratchEntryType.File, (long)data.Length, (UnixFileMode)0x1A4, (string?)null),
            (entry.Name, entry.Type, entry.Size, entry.Mode, entry.LinkTarget));
        Assert.True(Math.Abs((entry.ModifiedAt - DateTimeOffset.UtcNow).TotalHours) < 1);
        var top = await scratch.Files.ListAsync("");
        Assert.Equal(ScratchEntryType.Directory, Assert.Single(top, e => e.Name == "a").Type);
        // no temp file is left next to the target
        Assert.Equal(["data.bin"], Directory.GetFiles(Path.Combine(scratch.WorkPath, "a", "b")).Select(Path.GetFileName));
    }

    [Fact]
    public async Task Upload_replaces_a_file_atomically_and_keeps_its_mode()
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync();
        using var _ = sandbox;
        var target = Path.Combine(scratch.WorkPath, "run.sh");
        await File.WriteAllTextAsync(target, "old");
        File.SetUnixFileMode(target, (UnixFileMode)0x1ED);
        using var oldHandle = File.OpenHandle(target);

        await UploadTextAsync(scratch.Files, "run.sh", "new");

        Assert.Equal("new", await File.ReadAllTextAsync(target));
        Assert.Equal((UnixFileMode)0x1ED, File.GetUnixFileMode(target));
        // a new inode was renamed in: whoever held the old file still sees the old content
        var buffer = new byte[3];
        RandomAccess.Read(oldHandle, buffer, 0);
        Assert.Equal("old", System.Text.Encoding.ASCII.GetString(buffer));
    }

    [Theory]
    [MemberData(nameof(Resolutions))]
    public async Task Upload_into_a_missing_directory_needs_createParents(ScratchPathResolution resolution)
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync(resolution);
        using var _ = sandbox;
        var e = await Assert.ThrowsAsync<ScratchPathException>(() => UploadTextAsync(scratch.Files, "missing/f", "x"));
        Assert.Equal(ScratchPathError.NotFound, e.Error);
        Assert.Contains("missing/f", e.Message);
    }

    [Theory]
    [InlineData("../x", ScratchPathError.EscapesWorkDir)]
    [InlineData("a/../../x", ScratchPathError.EscapesWorkDir)]
    [InlineData("..", ScratchPathError.EscapesWorkDir)]
    [InlineData("/etc/passwd", ScratchPathError.EscapesWorkDir)]
    [InlineData("a//b", ScratchPathError.InvalidPath)]
    [InlineData("a/", ScratchPathError.InvalidPath)]
    [InlineData("./a", ScratchPathError.InvalidPath)]
    [InlineData("a\0b", ScratchPathError.InvalidPath)]
    public async Task Bad_paths_are_refused_by_every_operation(string path, ScratchPathError expected)
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync();
        using var _ = sandbox;
        var files = scratch.Files;
        var operations = new Func<Task>[]
        {
            () => UploadTextAsync(files, path, "x", createParents: true),
            () => files.OpenDownloadAsync(path),
            () => files.ListAsync(path),
            () => files.DeleteAsync(path),
            () => files.DownloadDirectoryAsTarAsync(path, Stream.Null, 1 << 20),
        };
        foreach (var operation in operations)
            Assert.Equal(expected, (await Assert.ThrowsAsync<ScratchPathException>(operation)).Error);
        sandbox.AssertOutsideUntouched();
        Assert.Empty(Directory.EnumerateFileSystemEntries(scratch.WorkPath));
    }

    [Theory]
    [MemberData(nameof(Resolutions))]
    public async Task Symlink_to_a_host_file_is_neither_read_nor_written(ScratchPathResolution resolution)
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync(resolution);
        using var _ = sandbox;
        File.CreateSymbolicLink(Path.Combine(scratch.WorkPath, "x"), sandbox.SecretPath);
        File.CreateSymbolicLink(Path.Combine(scratch.WorkPath, "shadow"), "/etc/shadow");

        foreach (var name in new[] { "x", "shadow" })
        {
            var down = await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.OpenDownloadAsync(name));
            Assert.Equal(ScratchPathError.IsSymlink, down.Error);
            Assert.Contains("is a symlink", down.Message);
            var up = await Assert.ThrowsAsync<ScratchPathException>(() => UploadTextAsync(scratch.Files, name, "overwritten"));
            Assert.Equal(ScratchPathError.IsSymlink, up.Error);
            var list = await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.ListAsync(name));
            Assert.True(list.Error is ScratchPathError.IsSymlink or ScratchPathError.NotDirectory, list.Message);
        }

        // listing shows the link itself
        var entry = Assert.Single(await scratch.Files.ListAsync(""), e => e.Name == "x");
        Assert.Equal(ScratchEntryType.Symlink, entry.Type);
        Assert.Equal(sandbox.SecretPath, entry.LinkTarget);
        // deleting removes the link, never the target
        await scratch.Files.DeleteAsync("x");
        Assert.False(File.Exists(Path.Combine(scratch.WorkPath, "x")));
        sandbox.AssertOutsideUntouched();
    }

    [Theory]
    [MemberData(nameof(Resolutions))]
    public async Task Symlinked_parent_directory_is_refused_and_nothing_is_created_outside(ScratchPathResolution resolution)
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync(resolution);
        using var _ = sandbox;
        Directory.CreateSymbolicLink(Path.Combine(scratch.WorkPath, "d"), sandbox.Outside);
        Directory.CreateDirectory(Path.Combine(scratch.WorkPath, "real"));
        Directory.CreateSymbolicLink(Path.Combine(scratch.WorkPath, "real", "up"), "../d");

        foreach (var dir in new[] { "d", "real/up", "real/up/sub" })
        {
            foreach (var createParents in new[] { false, true })
            {
                var e = await Assert.ThrowsAsync<ScratchPathException>(() => UploadTextAsync(scratch.Files, dir + "/f", "evil", createParents));
                Assert.Equal(ScratchPathError.IsSymlink, e.Error);
            }
            Assert.Equal(ScratchPathError.IsSymlink, (await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.OpenDownloadAsync(dir + "/secret"))).Error);
            Assert.Equal(ScratchPathError.IsSymlink, (await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.ListAsync(dir))).Error);
            Assert.Equal(ScratchPathError.IsSymlink, (await Assert.ThrowsAsync<ScratchPathException>(
                () => scratch.Files.DownloadDirectoryAsTarAsync(dir, Stream.Null, 1 << 20))).Error);
            Assert.Equal(ScratchPathError.IsSymlink, (await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.DeleteAsync(dir + "/secret"))).Error);
        }
        Assert.False(File.Exists(Path.Combine(sandbox.Outside, "f")));
        sandbox.AssertOutsideUntouched();
    }

    [Theory]
    [MemberData(nameof(Resolutions))]
    public async Task Fifo_and_device_are_refused_without_blocking(ScratchPathResolution resolution)
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync(resolution);
        using var _ = sandbox;
        TestLibc.MkFifo(Path.Combine(scratch.WorkPath, "fifo"));
        var names = new List<string> { "fifo" };
        if (TestLibc.TryMkCharDevice(Path.Combine(scratch.WorkPath, "null")))
            names.Add("null");

        foreach (var name in names)
        {
            // The guard only turns a regression (open(2) blocking on the fifo) into a failure instead of a hang.
            var down = await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.OpenDownloadAsync(name).WaitAsync(TimeSpan.FromMinutes(1)));
            Assert.Equal(ScratchPathError.NotRegularFile, down.Error);
            Assert.Contains("not a regular file", down.Message);
            var up = await Assert.ThrowsAsync<ScratchPathException>(() => UploadTextAsync(scratch.Files, name, "x").WaitAsync(TimeSpan.FromMinutes(1)));
            Assert.Equal(ScratchPathError.NotRegularFile, up.Error);
        }
        var listed = (await scratch.Files.ListAsync("")).ToDictionary(e => e.Name);
        Assert.Equal(ScratchEntryType.Fifo, listed["fifo"].Type);
        if (names.Contains("null"))
            Assert.Equal(ScratchEntryType.CharDevice, listed["null"].Type);
        await scratch.Files.DeleteAsync("fifo");
        Assert.DoesNotContain("fifo", (await scratch.Files.ListAsync("")).Select(e => e.Name));
    }

    [Fact]
    public async Task Size_limit_is_enforced_and_no_partial_file_is_left()
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync();
        using var _ = sandbox;
        var data = new byte[300_000];
        new Random(1).NextBytes(data);

        var e = await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.UploadAsync("big.bin", new MemoryStream(data), data.Length - 1, false));
        Assert.Equal(ScratchPathError.TooLarge, e.Error);
        Assert.Contains("too large", e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(scratch.WorkPath));

        // a failed replacement leaves the old file as it was
        await UploadTextAsync(scratch.Files, "big.bin", "previous");
        await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.UploadAsync("big.bin", new MemoryStream(data), 1000, false));
        Assert.Equal("previous", await File.ReadAllTextAsync(Path.Combine(scratch.WorkPath, "big.bin")));
        Assert.Single(Directory.EnumerateFileSystemEntries(scratch.WorkPath));

        // exactly at the limit is fine
        Assert.Equal(data.Length, await scratch.Files.UploadAsync("big.bin", new MemoryStream(data), data.Length, false));
    }

    [Fact]
    public async Task Cancelled_upload_leaves_no_partial_file()
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync();
        using var _ = sandbox;
        using var cts = new CancellationTokenSource();
        var content = new CancellingStream(cts, cancelAfterReads: 3);

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => scratch.Files.UploadAsync("f", content, 1 << 30, false, cts.Token));
        Assert.Empty(Directory.EnumerateFileSystemEntries(scratch.WorkPath));
    }

    [Fact]
    public async Task Hard_linked_files_download_by_default_and_are_refused_on_request()
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync();
        using var _ = sandbox;
        await UploadTextAsync(scratch.Files, "a", "shared");
        TestLibc.Link(Path.Combine(scratch.WorkPath, "a"), Path.Combine(scratch.WorkPath, "b"));
        Assert.Equal("shared"u8.ToArray(), await ReadAllAsync(await scratch.Files.OpenDownloadAsync("b")));

        var strict = new ScratchFiles(scratch.WorkPath, new ScratchFilesOptions { RefuseHardLinks = true });
        Assert.Equal(ScratchPathError.HardLinked, (await Assert.ThrowsAsync<ScratchPathException>(() => strict.OpenDownloadAsync("b"))).Error);

        // an upload over one link replaces that name only: the other link keeps its content
        await UploadTextAsync(scratch.Files, "b", "replaced");
        Assert.Equal("shared", await File.ReadAllTextAsync(Path.Combine(scratch.WorkPath, "a")));
    }

    [Theory]
    [MemberData(nameof(Resolutions))]
    public async Task Directory_downloads_as_tar_with_links_kept_and_special_files_skipped(ScratchPathResolution resolution)
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync(resolution);
        using var _ = sandbox;
        var binary = new byte[70_000];
        new Random(7).NextBytes(binary);
        await scratch.Files.UploadAsync("proj/bin/data.bin", new MemoryStream(binary), binary.Length, createParents: true);
        await UploadTextAsync(scratch.Files, "proj/readme.txt", "hello");
        Directory.CreateDirectory(Path.Combine(scratch.WorkPath, "proj", "empty"));
        File.CreateSymbolicLink(Path.Combine(scratch.WorkPath, "proj", "secret-link"), sandbox.SecretPath);
        Directory.CreateSymbolicLink(Path.Combine(scratch.WorkPath, "proj", "outside-dir"), sandbox.Outside);
        TestLibc.MkFifo(Path.Combine(scratch.WorkPath, "proj", "pipe"));

        var tar = new MemoryStream();
        var total = await scratch.Files.DownloadDirectoryAsTarAsync("proj", tar, 1 << 20).WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(binary.Length + 5, total);

        tar.Position = 0;
        var entries = new Dictionary<string, (TarEntryType Type, byte[]? Data, string Link)>();
        using (var reader = new TarReader(tar))
        {
            while (await reader.GetNextEntryAsync(copyData: true) is { } e)
                entries[e.Name] = (e.EntryType, e.DataStream == null ? null : await ReadAllAsync(e.DataStream), e.LinkName);
        }
        Assert.Equal(["bin/", "bin/data.bin", "empty/", "outside-dir", "readme.txt", "secret-link"], entries.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(binary, entries["bin/data.bin"].Data);
        Assert.Equal("hello"u8.ToArray(), entries["readme.txt"].Data);
        Assert.Equal((TarEntryType.SymbolicLink, sandbox.SecretPath), (entries["secret-link"].Type, entries["secret-link"].Link));
        Assert.Equal((TarEntryType.SymbolicLink, sandbox.Outside), (entries["outside-dir"].Type, entries["outside-dir"].Link));
        Assert.Equal(TarEntryType.Directory, entries["empty/"].Type);
        sandbox.AssertOutsideUntouched();

        // the whole work dir, too
        var all = new MemoryStream();
        Assert.Equal(total, await scratch.Files.DownloadDirectoryAsTarAsync("", all, 1 << 20));
    }

    [Fact]
    public async Task Tar_download_refuses_beyond_the_total_size_limit()
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync();
        using var _ = sandbox;
        for (var i = 0; i < 4; i++)
            await scratch.Files.UploadAsync($"d/f{i}", new MemoryStream(new byte[1000]), 1000, createParents: true);

        var e = await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.DownloadDirectoryAsTarAsync("d", new MemoryStream(), 3500));
        Assert.Equal(ScratchPathError.TooLarge, e.Error);
        Assert.Equal(4000, await scratch.Files.DownloadDirectoryAsTarAsync("d", new MemoryStream(), 4000));
    }

    [Theory]
    [MemberData(nameof(Resolutions))]
    public async Task Delete_removes_files_links_and_trees_but_never_link_targets(ScratchPathResolution resolution)
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync(resolution);
        using var _ = sandbox;
        await UploadTextAsync(scratch.Files, "t/a/b/c.txt", "c", createParents: true);
        File.CreateSymbolicLink(Path.Combine(scratch.WorkPath, "t", "a", "secret"), sandbox.SecretPath);
        Directory.CreateSymbolicLink(Path.Combine(scratch.WorkPath, "t", "outside"), sandbox.Outside);
        await UploadTextAsync(scratch.Files, "single", "s");

        await scratch.Files.DeleteAsync("single");
        await scratch.Files.DeleteAsync("t");

        Assert.Empty(Directory.EnumerateFileSystemEntries(scratch.WorkPath));
        Assert.Equal(ScratchPathError.NotFound, (await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.DeleteAsync("t"))).Error);
        Assert.Equal(ScratchPathError.IsDirectory, (await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.DeleteAsync(""))).Error);
        sandbox.AssertOutsideUntouched();
    }

    private sealed class CancellingStream(CancellationTokenSource cts, int cancelAfterReads) : Stream
    {
        private int _reads;
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (++_reads > cancelAfterReads)
                await cts.CancelAsync();
            cancellationToken.ThrowIfCancellationRequested();
            buffer.Span[..1000].Fill(1);
            return 1000;
        }
    }
}
