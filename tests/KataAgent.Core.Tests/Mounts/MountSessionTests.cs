using System.Text;
using KataAgent.Core.Sessions;
using KataAgent.Core.Tests.Scratch;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;
using Xunit.Abstractions;

namespace KataAgent.Core.Tests.Mounts;

/// <summary>An agent that allows host mounts from DATA_DIR/allowed only.</summary>
public class MountAgentFixture : AgentFixture
{
    public string AllowedRoot => Path.Combine(DataDir, "allowed");

    protected override AgentOptions Configure(AgentOptions options)
    {
        Directory.CreateDirectory(AllowedRoot);
        return options with { AllowedMountRoots = [AllowedRoot] };
    }
}

public sealed class MountRuncFixture : MountAgentFixture;
public sealed class MountGvisorFixture : MountAgentFixture;

/// <summary>
/// Host mounts in real sessions: a hostile client's path tricks are refused by name, a tenant swapping a
/// directory for a link while sessions are created never gets the outside tree mounted, read-only stays
/// read-only inside (submounts too), and no staging mount outlives its session.
/// </summary>
public abstract class MountSessionTestsBase(MountAgentFixture fixture, string runtime, ITestOutputHelper output)
{
    protected MountAgentFixture Fixture => fixture;
    protected Agent Agent => fixture.Agent;

    /// <summary>A fresh tree for one test: DATA_DIR/allowed/&lt;tag&gt; (inside the root) and DATA_DIR/outside-&lt;tag&gt; (outside it).</summary>
    protected (string Inside, string Outside) Tree(string tag)
    {
        var inside = Path.Combine(fixture.AllowedRoot, tag + "-" + Guid.NewGuid().ToString("N")[..6]);
        var outside = Path.Combine(fixture.DataDir, "outside-" + Path.GetFileName(inside));
        Directory.CreateDirectory(inside);
        Directory.CreateDirectory(outside);
        File.WriteAllText(Path.Combine(outside, "outside-only"), "host data outside the allowed root");
        return (inside, outside);
    }

    protected Task<Session> CreateAsync(params MountRequest[] mounts) =>
        Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime, Mounts = mounts });

    protected async Task<string> RunAsync(string kernelId, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var output = new StringBuilder();
        await foreach (var e in Agent.ExecuteAsync(kernelId, "r-" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
                           new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) }, timeout.Token))
        {
            if (e is OutputEvent { Item.Kind: "stdout" or "stderr" } o)
                output.Append(o.Item.Data);
        }
        return output.ToString();
    }

    protected async Task AssertNothingLeftAsync()
    {
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task Links_and_dot_dot_in_the_source_are_refused_by_name_and_leave_nothing()
    {
        var (inside, outside) = Tree("paths");
        Directory.CreateDirectory(Path.Combine(inside, "real"));
        File.CreateSymbolicLink(Path.Combine(inside, "evil"), "/");
        File.CreateSymbolicLink(Path.Combine(inside, "last"), outside);
        File.CreateSymbolicLink(Path.Combine(inside, "middle"), fixture.DataDir);
        var attacks = new[]
        {
            Path.Combine(inside, "evil") + "/..",                             // evil -> /, so evil/.. is the host's /
            Path.Combine(inside, "last"),                                     // a link as the last component
            Path.Combine(inside, "middle", Path.GetFileName(outside)),        // a link in a middle component
            Path.Combine(inside, "real") + "/../../../" + Path.GetFileName(outside),
        };
        foreach (var source in attacks)
        {
            var e = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(new MountRequest(source, "/mnt/x", ReadOnly: false)));
            Assert.Contains(source, e.Message, StringComparison.Ordinal);
        }
        await AssertNothingLeftAsync();
    }

    [Fact]
    public async Task A_folder_mounted_below_the_work_dir_as_Backend_AI_mounts_vfolders_is_there_and_the_work_dir_itself_stays_reserved()
    {
        var (inside, _) = Tree("vfolder");
        var data = Path.Combine(inside, "data");
        Directory.CreateDirectory(data);
        File.WriteAllText(Path.Combine(data, "model.txt"), "weights");
        var session = await CreateAsync(new MountRequest(data, "/home/work/data", ReadOnly: true));
        try
        {
            var output = await RunAsync(session.KernelId, """
                import os
                print(open('/home/work/data/model.txt').read())
                try:
                    open('/home/work/data/new', 'w')
                    print('WROTE')
                except OSError as e:
                    print('refused', e.errno)
                open('/home/work/mine.txt', 'w').write('still the work dir')
                print(sorted(os.listdir('/home/work')))
                """);
            Assert.Contains("weights", output, StringComparison.Ordinal);
            Assert.Contains("refused 30", output, StringComparison.Ordinal); // EROFS
            Assert.Contains("'data'", output, StringComparison.Ordinal);
            Assert.Contains("'mine.txt'", output, StringComparison.Ordinal);
            Assert.False(File.Exists(Path.Combine(data, "new")));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
        foreach (var reserved in new[] { "/home/work", "/home/work/", "/home/config/x" })
        {
            var e = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(new MountRequest(data, reserved, ReadOnly: true)));
            Assert.Contains("reserved for the agent", e.Message, StringComparison.Ordinal);
        }
        await AssertNothingLeftAsync();
    }

    [Fact]
    public async Task Read_only_stays_read_only_inside_including_a_submount_and_read_write_writes_through()
    {
        var (inside, _) = Tree("ro");
        var ro = Path.Combine(inside, "ro");
        var rw = Path.Combine(inside, "rw");
        Directory.CreateDirectory(Path.Combine(ro, "sub"));
        Directory.CreateDirectory(rw);
        File.WriteAllText(Path.Combine(ro, "file.txt"), "read me");
        TestMounts.Tmpfs(Path.Combine(ro, "sub"));
        File.WriteAllText(Path.Combine(ro, "sub", "submarker"), "on the submount");

        var session = await CreateAsync(new MountRequest(ro, "/mnt/ro", ReadOnly: true), new MountRequest(rw, "/mnt/rw", ReadOnly: false));
        const string probe = """
            import os, errno
            def attempt(path):
                try:
                    with open(path, 'w') as f: f.write('x')
                    return 'WROTE'
                except OSError as e:
                    return errno.errorcode.get(e.errno, str(e.errno))
            def chmod(path):
                try:
                    os.chmod(path, 0o777); return 'CHMOD'
                except OSError as e:
                    return errno.errorcode.get(e.errno, str(e.errno))
            print('read', open('/mnt/ro/file.txt').read())
            print('sub', open('/mnt/ro/sub/submarker').read() if os.path.exists('/mnt/ro/sub/submarker') else 'absent')
            print('top', attempt('/mnt/ro/new'))
            print('subw', attempt('/mnt/ro/sub/new'))
            print('chmod', chmod('/mnt/ro/file.txt'))
            print('rw', attempt('/mnt/rw/from-guest'))
            """;
        try
        {
            var output = await RunAsync(session.KernelId, probe);
            Assert.Contains("read read me", output, StringComparison.Ordinal);
            Assert.Contains("top EROFS", output, StringComparison.Ordinal);
            Assert.Contains("subw EROFS", output, StringComparison.Ordinal);
            Assert.Contains("chmod EROFS", output, StringComparison.Ordinal);
            Assert.Contains("sub on the submount", output, StringComparison.Ordinal);
            Assert.Contains("rw WROTE", output, StringComparison.Ordinal);
            Assert.True(File.Exists(Path.Combine(rw, "from-guest")));
            Assert.False(File.Exists(Path.Combine(ro, "new")));
            Assert.False(File.Exists(Path.Combine(ro, "sub", "new")));

            // A restart makes a new container from the same staged mounts.
            await Agent.RestartSessionAsync(session.KernelId);
            Assert.Contains("top EROFS", await RunAsync(session.KernelId, probe), StringComparison.Ordinal);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
        await AssertNothingLeftAsync();
    }

    [Fact]
    public async Task A_directory_swapped_with_a_link_while_sessions_are_created_never_mounts_the_outside_tree()
    {
        var (inside, outside) = Tree("swap");
        var real = Path.Combine(inside, "real");
        var link = Path.Combine(inside, "link");
        Directory.CreateDirectory(real);
        File.WriteAllText(Path.Combine(real, "marker"), "only in the allowed directory");
        File.CreateSymbolicLink(link, outside);

        async Task AssertPinnedAsync(Session session, List<string> seen)
        {
            try
            {
                // The runtime mounted long after the check: a re-resolved path would be the outside tree.
                var listing = await RunAsync(session.KernelId, "import os; print(sorted(os.listdir('/mnt/pinned')))");
                seen.Add(listing.Trim());
                Assert.Contains("'marker'", listing, StringComparison.Ordinal);
                Assert.DoesNotContain("outside-only", listing, StringComparison.Ordinal);
            }
            finally
            {
                await Agent.DestroySessionAsync(session.KernelId);
            }
        }
        void Swap()
        {
            if (TestLibc.Exchange(real, link) != 0)
                throw new IOException("RENAME_EXCHANGE failed");
        }

        // Deterministic: the tenant swaps right after each step that could re-resolve the path. The session must still
        // see the directory that was checked, whatever the path names by the time the runtime mounts it.
        var seen = new List<string>();
        foreach (var swapAfter in new[] { "validate", "resolve-image", "mounts", "network" })
        {
            var swapped = false;
            Agent.Creator.AfterStep = (step, _) =>
            {
                if (step == swapAfter)
                {
                    Swap();
                    swapped = true;
                }
                return Task.CompletedTask;
            };
            try
            {
                await AssertPinnedAsync(await CreateAsync(new MountRequest(real, "/mnt/pinned", ReadOnly: true)), seen);
            }
            finally
            {
                Agent.Creator.AfterStep = null;
                if (swapped)
                    Swap(); // back: `real` is the directory again
            }
            Assert.True(swapped, $"the swap after step {swapAfter} did not happen");
        }

        // Deterministic: when the path is the link at the check, the create is refused and names it.
        Swap();
        var refusal = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(new MountRequest(real, "/mnt/pinned", ReadOnly: true)));
        Assert.Contains(real, refusal.Message, StringComparison.Ordinal);
        Swap();

        // Free-running: the tenant's loop trades the two places over and over while sessions are made. Whatever the
        // timing, a create is either refused or sees the checked directory.
        using var stop = new CancellationTokenSource();
        long swaps = 0;
        var swapper = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                Swap();
                Interlocked.Increment(ref swaps);
            }
        });
        int created = 0, refused = 0;
        try
        {
            for (var attempt = 0; attempt < 10; attempt++)
            {
                Session session;
                try
                {
                    session = await CreateAsync(new MountRequest(real, "/mnt/pinned", ReadOnly: true));
                }
                catch (SessionRequestException e)
                {
                    refused++;
                    Assert.Contains(real, e.Message, StringComparison.Ordinal);
                    continue;
                }
                created++;
                await AssertPinnedAsync(session, seen);
            }
        }
        finally
        {
            await stop.CancelAsync();
            await swapper;
        }
        output.WriteLine($"{runtime} swap race: created {created}, refused {refused}, swaps {Interlocked.Read(ref swaps)}; listings seen: {string.Join(" | ", seen.Distinct())}");
        await AssertNothingLeftAsync();
    }

    [Fact]
    public async Task A_bad_mount_source_fails_at_step_validate_before_anything_is_staged_taken_or_attached()
    {
        var (inside, outside) = Tree("validate");
        var good = Path.Combine(inside, "good");
        var link = Path.Combine(inside, "link");
        Directory.CreateDirectory(good);
        File.CreateSymbolicLink(link, outside);
        var kernelId = "badmount-" + Guid.NewGuid().ToString("N")[..6];
        var portsBefore = Agent.Services.Ports.InUse.ToList();
        var started = new StepLog();
        var completed = new StepLog();
        Agent.Creator.AfterStep = (step, _) =>
        {
            completed.Report(step);
            return Task.CompletedTask;
        };
        try
        {
            var e = await Assert.ThrowsAsync<SessionRequestException>(() => Agent.CreateSessionAsync(new SessionRequest
            {
                Image = fixture.ImageName, RuntimeClass = runtime, KernelId = kernelId,
                Mounts = [new MountRequest(good, "/mnt/good", ReadOnly: true), new MountRequest(link, "/mnt/bad", ReadOnly: true)],
            }, started));
            Assert.Contains(link, e.Message, StringComparison.Ordinal);
        }
        finally
        {
            Agent.Creator.AfterStep = null;
        }
        // Step validate started and did not complete; no other step started.
        Assert.Equal(["validate"], started.Steps);
        Assert.Empty(completed.Steps);
        Assert.False(Directory.Exists(Agent.Services.MountStaging.SessionDirectory(kernelId)), "the good mount was staged");
        Assert.DoesNotContain(HostNetwork.NetnsNames(), n => n.Contains(kernelId, StringComparison.Ordinal));
        Assert.Empty(await HostNetwork.RulesMentioningAsync(kernelId));
        Assert.Equal(portsBefore.Order(), Agent.Services.Ports.InUse.Order());
        Assert.DoesNotContain(Agent.Resources.Allocations, a => a.KernelId == kernelId);
        Assert.False(Directory.Exists(Path.Combine(Agent.Options.ScratchRoot, kernelId)), "scratch dir made");
        await AssertNothingLeftAsync();
    }

    /// <summary>Records step names as they are reported, synchronously (Progress&lt;T&gt; posts them later).</summary>
    private sealed class StepLog : IProgress<string>
    {
        private readonly List<string> _steps = [];

        public IReadOnlyList<string> Steps
        {
            get
            {
                lock (_steps)
                    return [.. _steps];
            }
        }

        public void Report(string value)
        {
            lock (_steps)
                _steps.Add(value);
        }
    }

    [Theory]
    [InlineData("allocate-resources")]
    [InlineData("network")]
    [InlineData("wait-runner")]
    public async Task A_failed_create_after_the_mounts_step_leaves_no_staging(string step)
    {
        var (inside, _) = Tree("rollback");
        Agent.Creator.FailBeforeStep = step;
        try
        {
            var e = await Assert.ThrowsAnyAsync<Exception>(() => CreateAsync(new MountRequest(inside, "/mnt/x", ReadOnly: true)));
            Assert.Contains(step, e.Message, StringComparison.Ordinal);
        }
        finally
        {
            Agent.Creator.FailBeforeStep = null;
        }
        Assert.Empty(Agent.Services.MountStaging.Leftovers());
        await AssertNothingLeftAsync();
    }
}

public sealed class RuncMountSessionTests(MountRuncFixture fixture, ITestOutputHelper output) : MountSessionTestsBase(fixture, "runc", output), IClassFixture<MountRuncFixture>
{
    /// <summary>
    /// What a kill -9 leaves: staging made for a create that never got further (no record, no container), and a
    /// session whose sandbox died while the agent was away. The next start releases both.
    /// </summary>
    [Fact]
    public async Task Staging_left_by_a_killed_agent_goes_at_the_next_start()
    {
        var (inside, _) = Tree("killed");
        // The agent died right after the mounts step of a create: only the staging exists.
        var halfMade = "killed-" + Guid.NewGuid().ToString("N")[..6];
        Agent.Services.MountStaging.Pin(halfMade, [new KataAgent.Core.Mounts.MountSource(inside, ReadOnly: true)], Agent.Options.AllowedMountRoots);
        // A gVisor session dies with its shim while the agent is away.
        var dies = await Agent.CreateSessionAsync(new SessionRequest
        {
            Image = Fixture.ImageName, RuntimeClass = "gvisor", Mounts = [new MountRequest(inside, "/mnt/x", ReadOnly: false)],
        });
        Assert.Equal(2, Agent.Services.MountStaging.Sessions().Count);

        await Fixture.Agent.DisposeAsync();
        foreach (var (pid, _) in ProcessTable.All().Where(p => p.CommandLine.Contains("containerd-shim", StringComparison.Ordinal) &&
                     p.CommandLine.Contains(dies.KernelId, StringComparison.Ordinal)).ToList())
        {
            ProcessTable.Kill(pid, 9);
        }
        await Fixture.RestartAgentAsync();

        Assert.Equal("agent-lost", Assert.Throws<SessionEndedException>(() => Agent.GetSession(dies.KernelId)).Tombstone.EndReason.Name);
        Assert.Empty(Agent.Services.MountStaging.Leftovers());
        await AssertNothingLeftAsync();
    }
}

public sealed class GvisorMountSessionTests(MountGvisorFixture fixture, ITestOutputHelper output) : MountSessionTestsBase(fixture, "gvisor", output), IClassFixture<MountGvisorFixture>;
