using KataAgent.Core.Mounts;
using KataAgent.Core.Tests.Scratch;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace KataAgent.Core.Tests.Mounts;

/// <summary>Staging on the real mount table (no runtime): what gets mounted, how read-only it is, and that release leaves nothing.</summary>
public sealed class MountStagingTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly string _top = Path.Combine("/tmp", "kam-stage-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly string _allowed;
    private readonly string _outside;

    public MountStagingTests(ITestOutputHelper output)
    {
        _output = output;
        _allowed = Path.Combine(_top, "allowed");
        _outside = Path.Combine(_top, "outside");
        Directory.CreateDirectory(Path.Combine(_allowed, "rw"));
        Directory.CreateDirectory(Path.Combine(_allowed, "ro", "sub"));
        Directory.CreateDirectory(_outside);
        File.WriteAllText(Path.Combine(_allowed, "ro", "file.txt"), "ro");
        File.WriteAllText(Path.Combine(_allowed, "single.txt"), "single");
        File.WriteAllText(Path.Combine(_outside, "secret"), "outside");
    }

    public void Dispose()
    {
        KataAgent.Testing.Mounts.UnmountAllUnder(_top);
        Directory.Delete(_top, recursive: true);
    }

    private MountStaging Staging(bool useMountSetattr = true) => new(Path.Combine(_top, "data", "mounts"), NullLogger.Instance, useMountSetattr);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Staged_mounts_are_the_sources_read_only_ones_recursively_and_release_leaves_nothing(bool useMountSetattr)
    {
        TestMounts.Tmpfs(Path.Combine(_allowed, "ro", "sub"));
        File.WriteAllText(Path.Combine(_allowed, "ro", "sub", "marker"), "submount");
        var staging = Staging(useMountSetattr);
        var staged = staging.Pin("k1", [
            new MountSource(Path.Combine(_allowed, "rw"), ReadOnly: false),
            new MountSource(Path.Combine(_allowed, "ro"), ReadOnly: true),
            new MountSource(Path.Combine(_allowed, "single.txt"), ReadOnly: true),
        ], [_allowed]);

        Assert.Equal([staging.StagingPath("k1", 0), staging.StagingPath("k1", 1), staging.StagingPath("k1", 2)], staged);
        File.WriteAllText(Path.Combine(staged[0], "written"), "yes");
        Assert.Equal("yes", File.ReadAllText(Path.Combine(_allowed, "rw", "written")));
        Assert.Equal("ro", File.ReadAllText(Path.Combine(staged[1], "file.txt")));
        Assert.Equal("submount", File.ReadAllText(Path.Combine(staged[1], "sub", "marker")));
        // Root ignores permissions but not a read-only mount: EROFS on the top and on the submount.
        AssertReadOnly(() => File.WriteAllText(Path.Combine(staged[1], "new"), "x"));
        AssertReadOnly(() => File.WriteAllText(Path.Combine(staged[1], "sub", "new"), "x"));
        AssertReadOnly(() => File.WriteAllText(staged[2], "overwritten"));
        Assert.Equal("single", File.ReadAllText(Path.Combine(_allowed, "single.txt")));

        // Nothing propagates: the staged mounts are private, the root unbindable.
        var table = MountTable.Read();
        Assert.Contains("unbindable", table.Single(m => m.MountPoint == staging.Root).OptionalFields);
        foreach (var mount in MountTable.Below(staging.Root))
            Assert.DoesNotContain(mount.OptionalFields, f => f.StartsWith("shared:", StringComparison.Ordinal) || f.StartsWith("master:", StringComparison.Ordinal));
        Assert.NotEmpty(staging.Leftovers());

        staging.Release("k1");
        Assert.Empty(staging.Leftovers());
        Assert.False(Directory.Exists(staging.SessionDirectory("k1")));
        // The sources are untouched by the release.
        Assert.Equal("yes", File.ReadAllText(Path.Combine(_allowed, "rw", "written")));
        Assert.Equal("submount", File.ReadAllText(Path.Combine(_allowed, "ro", "sub", "marker")));
        staging.Release("k1"); // idempotent
    }

    [Fact]
    public void A_refused_source_stages_nothing_and_an_existing_session_is_never_adopted()
    {
        var staging = Staging();
        File.CreateSymbolicLink(Path.Combine(_allowed, "evil"), "/");
        var e = Assert.Throws<MountSourceException>(() => staging.Pin("k2", [
            new MountSource(Path.Combine(_allowed, "rw"), false),
            new MountSource(Path.Combine(_allowed, "evil") + "/..", false),
        ], [_allowed]));
        Assert.Contains(Path.Combine(_allowed, "evil") + "/..", e.Message, StringComparison.Ordinal);
        Assert.Empty(staging.Leftovers());

        staging.Pin("k3", [new MountSource(Path.Combine(_allowed, "rw"), false)], [_allowed]);
        var again = Assert.Throws<IOException>(() => staging.Pin("k3", [new MountSource(Path.Combine(_allowed, "ro"), true)], [_allowed]));
        Assert.Contains("k3", again.Message, StringComparison.Ordinal);
        // The first session's staging is still there and still its own.
        Assert.Equal([staging.StagingPath("k3", 0)], staging.Existing("k3", 1));
        staging.Release("k3");
        Assert.Empty(staging.Leftovers());
        var lost = Assert.Throws<InvalidOperationException>(() => staging.Existing("k3", 1));
        Assert.Contains("lost its staged mount", lost.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Swapping_a_directory_and_a_link_while_pinning_never_stages_the_outside_tree()
    {
        var swap = Path.Combine(_allowed, "swap");
        var real = Path.Combine(swap, "real");
        Directory.CreateDirectory(real);
        File.WriteAllText(Path.Combine(real, "marker"), "inside");
        File.CreateSymbolicLink(Path.Combine(swap, "link"), _outside);
        var staging = Staging();
        using var stop = new CancellationTokenSource();
        long swaps = 0;
        // A thread of its own: on a busy machine a pool task may not run before the pins are done.
        var swapper = Task.Factory.StartNew(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                Assert.Equal(0, TestLibc.Exchange(real, Path.Combine(swap, "link")));
                Interlocked.Increment(ref swaps);
            }
        }, stop.Token, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        await Eventually.WaitAsync(() => Interlocked.Read(ref swaps) > 0 || swapper.IsCompleted, "the swapper thread's first swap");
        int staged = 0, refused = 0;
        try
        {
            // Until both outcomes were seen at least 100 times each (or a generous cap).
            for (var i = 0; (staged < 100 || refused < 100) && i < 20000; i++)
            {
                var id = "race" + i;
                try
                {
                    var path = staging.Pin(id, [new MountSource(real, ReadOnly: true)], [_allowed]).Single();
                    staged++;
                    Assert.True(File.Exists(Path.Combine(path, "marker")), "staged the outside tree");
                    Assert.False(File.Exists(Path.Combine(path, "secret")), "staged the outside tree");
                    staging.Release(id);
                }
                catch (MountSourceException e)
                {
                    refused++;
                    Assert.Contains(real, e.Message, StringComparison.Ordinal);
                }
                Assert.Empty(staging.Leftovers());
            }
        }
        finally
        {
            await stop.CancelAsync();
            await swapper.ContinueWith(_ => { }, TaskScheduler.Default);
        }
        Assert.False(swapper.IsFaulted, swapper.Exception?.ToString());
        _output.WriteLine($"staged {staged}, refused {refused}, swaps {swaps}");
        Assert.True(staged > 0 && refused > 0, $"the race was not exercised: staged {staged}, refused {refused}, swaps {swaps}");
    }

    [Fact]
    public void Sources_opened_in_one_step_and_staged_in_a_later_one_stage_what_was_opened_even_after_a_swap()
    {
        var swap = Path.Combine(_allowed, "later");
        var real = Path.Combine(swap, "real");
        var link = Path.Combine(swap, "link");
        Directory.CreateDirectory(real);
        File.WriteAllText(Path.Combine(real, "marker"), "inside");
        File.CreateSymbolicLink(link, _outside);
        var staging = Staging();

        // Step validate opens (and checks); the tenant swaps before step mounts stages.
        using (var opened = PinnedMountSources.Open([new MountSource(real, ReadOnly: true)], [_allowed]))
        {
            Assert.Equal(0, TestLibc.Exchange(real, link));
            var path = staging.Stage("later", opened).Single();
            Assert.True(File.Exists(Path.Combine(path, "marker")), "staged what the path names now, not what was checked");
            Assert.False(File.Exists(Path.Combine(path, "secret")), "staged the outside tree");
        }
        staging.Release("later");
        Assert.Empty(staging.Leftovers());

        // Now the path is the link: the open refuses it, and nothing stays open or staged.
        var e = Assert.Throws<MountSourceException>(() => PinnedMountSources.Open([new MountSource(real, ReadOnly: true)], [_allowed]));
        Assert.Contains("symlink", e.Message, StringComparison.Ordinal);
        Assert.Empty(staging.Leftovers());
    }

    private static void AssertReadOnly(Action write)
    {
        var e = Assert.ThrowsAny<IOException>(write);
        Assert.Contains("Read-only file system", e.Message, StringComparison.OrdinalIgnoreCase);
    }
}
