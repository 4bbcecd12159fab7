using KataAgent.Core.Mounts;
using KataAgent.Core.Tests.Scratch;

namespace KataAgent.Core.Tests.Mounts;

/// <summary>The path opener on a temp tree: what it pins, and every way to lead it out of the allowed root.</summary>
public sealed class MountSourceOpenerTests : IDisposable
{
    private readonly string _top = Path.Combine(Path.GetTempPath(), "kam-open-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly string _allowed;
    private readonly string _outside;

    public MountSourceOpenerTests()
    {
        _allowed = Path.Combine(_top, "allowed");
        _outside = Path.Combine(_top, "outside");
        Directory.CreateDirectory(Path.Combine(_allowed, "u1", "data"));
        Directory.CreateDirectory(_outside);
        File.WriteAllText(Path.Combine(_allowed, "u1", "data", "file.txt"), "inside");
        File.WriteAllText(Path.Combine(_outside, "secret"), "outside");
    }

    public void Dispose() => Directory.Delete(_top, recursive: true);

    private PinnedMountSource Open(string path) => MountSourceOpener.Open(path, [_allowed]);

    [Fact]
    public void A_directory_and_a_file_under_the_root_are_pinned_to_their_inodes()
    {
        using var dir = Open(Path.Combine(_allowed, "u1", "data"));
        Assert.Equal(MountSourceKind.Directory, dir.Kind);
        Assert.Equal(TestMounts.InodeOf(Path.Combine(_allowed, "u1", "data")), dir.Inode);
        using var file = Open(Path.Combine(_allowed, "u1", "data", "file.txt") + "/");
        Assert.Equal(MountSourceKind.File, file.Kind);
        Assert.Equal("inside", File.ReadAllText(file.ProcPath));
        using var root = Open(_allowed);
        Assert.Equal(TestMounts.InodeOf(_allowed), root.Inode);
    }

    [Fact]
    public void Dot_dot_after_a_link_to_root_is_refused_by_name()
    {
        // The issue's attack: allowed/evil/.. with evil -> / passes a text check and mounts the host's /.
        File.CreateSymbolicLink(Path.Combine(_allowed, "evil"), "/");
        var path = Path.Combine(_allowed, "evil") + "/..";
        var e = Assert.Throws<MountSourceException>(() => Open(path));
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        Assert.Contains("'..'", e.Message, StringComparison.Ordinal);
        Assert.Throws<MountSourceException>(() => Open(_allowed + "/u1/../u1/data"));
        Assert.Throws<MountSourceException>(() => Open(_allowed + "/./u1"));
    }

    [Fact]
    public void A_symlink_as_the_last_component_is_refused_naming_it()
    {
        File.CreateSymbolicLink(Path.Combine(_allowed, "u1", "link"), _outside);
        File.CreateSymbolicLink(Path.Combine(_allowed, "u1", "inner"), Path.Combine(_allowed, "u1", "data"));
        var e = Assert.Throws<MountSourceException>(() => Open(Path.Combine(_allowed, "u1", "link")));
        Assert.Contains("symlink at '" + Path.Combine(_allowed, "u1", "link") + "'", e.Message, StringComparison.Ordinal);
        // Even a link that stays inside the root: a link is a name that can be re-pointed later.
        Assert.Throws<MountSourceException>(() => Open(Path.Combine(_allowed, "u1", "inner")));
    }

    [Fact]
    public void A_symlink_in_a_middle_component_is_refused_naming_it()
    {
        File.CreateSymbolicLink(Path.Combine(_allowed, "mid"), _top);
        var path = Path.Combine(_allowed, "mid", "outside");
        var e = Assert.Throws<MountSourceException>(() => Open(path));
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        Assert.Contains("symlink at '" + Path.Combine(_allowed, "mid") + "'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Paths_outside_every_root_missing_paths_and_special_files_are_refused()
    {
        var e = Assert.Throws<MountSourceException>(() => Open(_outside));
        Assert.Contains("not under an allowed root", e.Message, StringComparison.Ordinal);
        // A sibling whose name merely starts with the root's is not under it.
        Directory.CreateDirectory(_allowed + "2");
        Assert.Throws<MountSourceException>(() => Open(_allowed + "2"));
        e = Assert.Throws<MountSourceException>(() => Open(Path.Combine(_allowed, "u1", "nope", "x")));
        Assert.Contains("does not exist ('" + Path.Combine(_allowed, "u1", "nope") + "' is missing)", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<MountSourceException>(() => Open(Path.Combine(_allowed, "u1", "data", "file.txt", "x")));
        Assert.Contains("not a directory", e.Message, StringComparison.Ordinal);
        TestLibc.MkFifo(Path.Combine(_allowed, "fifo"));
        e = Assert.Throws<MountSourceException>(() => Open(Path.Combine(_allowed, "fifo")));
        Assert.Contains("neither a directory nor a regular file", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<MountSourceException>(() => MountSourceOpener.Open(_allowed, []));
        Assert.Contains("allows no host mounts", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<MountSourceException>(() => Open("relative/path"));
        Assert.Contains("not an absolute path", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_longest_matching_root_is_chosen_and_roots_are_compared_by_component()
    {
        var parsed = MountSourcePath.Parse("/data/u1//x/", ["/data", "/data/u1/", "/dat"]);
        Assert.Equal("/data/u1", parsed.Root);
        Assert.Equal(["x"], parsed.Components);
        Assert.Equal("/", MountSourcePath.Parse("/anything", ["/"]).Root);
    }

    [Fact]
    public void A_pinned_source_keeps_its_inode_whatever_the_path_becomes()
    {
        var data = Path.Combine(_allowed, "u1", "data");
        using var pinned = Open(data);
        // Swap the directory for a link to the outside tree after the check.
        Assert.Equal(0, SwapWithLink(data, _outside));
        Assert.True(File.Exists(Path.Combine(pinned.ProcPath, "file.txt")));
        Assert.False(File.Exists(Path.Combine(pinned.ProcPath, "secret")));
        Assert.Throws<MountSourceException>(() => Open(data));
    }

    [Fact]
    public void The_mountinfo_parser_reads_escaped_mount_points_and_optional_fields()
    {
        var entries = MountTable.Parse([
            @"36 35 98:0 /mnt1 /a\040b/c\134d rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue",
            "37 36 0:5 / /x rw - tmpfs tmpfs rw",
        ]);
        Assert.Equal(@"/a b/c\d", entries[0].MountPoint);
        Assert.Equal(["rw", "noatime"], entries[0].Options);
        Assert.Equal(["master:1", "shared:2"], entries[0].OptionalFields);
        Assert.Empty(entries[1].OptionalFields);
    }

    /// <summary>Puts a link to <paramref name="target"/> where <paramref name="path"/> was (exchanging atomically), returning errno.</summary>
    private static int SwapWithLink(string path, string target)
    {
        var link = path + ".swap";
        File.CreateSymbolicLink(link, target);
        return TestLibc.Exchange(path, link);
    }
}
