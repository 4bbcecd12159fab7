using KataAgent.Core.Pool;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Core.Tests;

/// <summary>
/// An agent with one warm pool of the python base image (0.5 cpu, 512 MiB: the shape of a default request), two idle
/// members, on a host of 2 cpus: the pool's 1 cpu counts against the capacity like any session.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "the semaphore holds no wait handle (WaitAsync only)")]
public abstract class PoolAgentFixture(string runtime) : AgentFixture
{
    private readonly SemaphoreSlim _started = new(1, 1);
    private bool _pooled;

    public string Runtime { get; } = runtime;

    public string MountRoot => Path.Combine(DataDir, "mount-root");

    /// <summary>The image is imported after the first start, so the pool comes with a restart naming it.</summary>
    public async Task EnsurePoolAsync()
    {
        await _started.WaitAsync();
        try
        {
            if (_pooled)
                return;
            Directory.CreateDirectory(MountRoot);
            await RestartAgentAsync(o => o with
            {
                Resources = o.Resources with { TotalCpus = 2, TotalMemoryBytes = 6L << 30 },
                AllowedMountRoots = [MountRoot],
                Pools = [new PoolSpec { Image = ImageName, RuntimeClass = Runtime, Cpus = 0.5, MemoryBytes = 512L << 20, Min = 1, Max = 2, TargetIdle = 2 }],
            });
            _pooled = true;
        }
        finally
        {
            _started.Release();
        }
    }
}

public sealed class RuncPoolFixture() : PoolAgentFixture("runc");
public sealed class GvisorPoolFixture() : PoolAgentFixture("gvisor");

/// <summary>
/// Claims of warm-pool members on real runc and gVisor sessions: what a claim personalises, what it never shares, what
/// goes cold, and that members are reaped on death, capacity pressure, restart and recovery.
/// </summary>
public abstract class WarmPoolTestsBase(PoolAgentFixture fixture)
{
    private static readonly TimeSpan Fill = TimeSpan.FromMinutes(4);

    private Agent Agent => fixture.Agent;

    private PoolStatus Pool => Agent.Pools.Single();

    private Task<PoolStatus> FullAsync() =>
        Eventually.WaitAsync(() => Pool, p => p.Idle == 2 && p.Filling == 0, "the pool to hold 2 idle members", Fill);

    private Task<Session> CreateAsync(SessionRequest? request = null) =>
        Agent.CreateSessionAsync((request ?? new SessionRequest { Image = fixture.ImageName }) with { Image = fixture.ImageName, RuntimeClass = fixture.Runtime });

    private async Task<string> RunAsync(Session session, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var result = await RunEvents.CollectAsync(Agent.ExecuteAsync(session.KernelId, "run-" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
            new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) }, timeout.Token));
        Assert.Equal(ExecutionStatus.Finished, result.Status);
        return string.Concat(result.Console.Where(c => c.Kind == "stdout").Select(c => c.Data));
    }

    private async Task AssertGoneAsync(SessionRecord record)
    {
        Assert.Null(await Agent.Containerd.Containers.FindAsync(record.ContainerId));
        Assert.False(Directory.Exists(record.ScratchDir), $"scratch {record.ScratchDir} is left");
        Assert.False(File.Exists(record.LogPath), $"log {record.LogPath} is left");
    }

    [Fact]
    public async Task A_claim_personalises_the_member_env_labels_bootstrap_timers_scratch_and_never_shares_it()
    {
        await fixture.EnsurePoolAsync();
        var before = await FullAsync();
        var kernelId = "claim-" + Guid.NewGuid().ToString("N")[..8];
        var first = await CreateAsync(new SessionRequest
        {
            Image = "",
            KernelId = kernelId,
            Environment = new Dictionary<string, string> { ["TENANT"] = "first" },
            Labels = new Dictionary<string, string> { ["team"] = "blue" },
            BootstrapScript = "echo booted-$TENANT > /home/work/bootstrap-ran.txt\n",
            IdleTimeout = TimeSpan.FromHours(3),
        });
        var second = await CreateAsync(new SessionRequest { Image = "", Environment = new Dictionary<string, string> { ["TENANT"] = "second" } });
        try
        {
            Assert.Equal(CreatePath.Pooled, first.CreatePath);
            Assert.Equal(CreatePath.Pooled, second.CreatePath);
            Assert.Equal(kernelId, first.KernelId);
            Assert.StartsWith("pool-", first.Record.ContainerId, StringComparison.Ordinal);
            Assert.Contains(first.Record.ContainerId, before.IdleMembers);
            Assert.NotEqual(first.Record.ContainerId, second.Record.ContainerId);
            Assert.DoesNotContain(first.Record.ContainerId, Pool.IdleMembers);
            Assert.True(Pool.Claims >= 2);

            // Environment and bootstrap: applied before the first run, through the runner's published ports.
            Assert.Equal("first\n", await RunAsync(first, "import os; print(os.environ.get('TENANT'))"));
            Assert.Equal("second\n", await RunAsync(second, "import os; print(os.environ.get('TENANT'))"));
            Assert.Equal("booted-first\n", await RunAsync(first, "print(open('/home/work/bootstrap-ran.txt').read(), end='')"));

            // Labels: the container now says whose it is, and no longer that it is idle in the pool.
            var labels = (await Agent.Containerd.Containers.GetAsync(first.Record.ContainerId)).Labels;
            Assert.Equal(kernelId, labels[SessionLabels.KernelId]);
            Assert.Equal("blue", labels["team"]);
            Assert.False(labels.ContainsKey(SessionLabels.PoolMember));
            Assert.True(SessionLabels.TryReadRecord(labels, out var json));
            Assert.Equal(kernelId, SessionRecord.FromJson(json).KernelId);

            // Timers start at the claim, from the request.
            Assert.Equal(TimeSpan.FromHours(3), first.Timeouts.Idle);
            Assert.True(DateTimeOffset.UtcNow - first.Record.CreatedAt < TimeSpan.FromMinutes(5));

            // Scratch: each session's own; what one writes the other never sees.
            await RunAsync(first, "open('/home/work/secret.txt', 'w').write('first only')");
            Assert.Equal("False\n", await RunAsync(second, "import os; print(os.path.exists('/home/work/secret.txt'))"));
            Assert.NotEqual(first.Record.ScratchDir, second.Record.ScratchDir);
            await using (var secret = await Agent.Files(kernelId).OpenDownloadAsync("secret.txt"))
            using (var reader = new StreamReader(secret))
                Assert.Equal("first only", await reader.ReadToEndAsync());

            // The pool makes new members for the ones claimed, never the same ones again.
            var refilled = await FullAsync();
            Assert.DoesNotContain(first.Record.ContainerId, refilled.IdleMembers);
            Assert.DoesNotContain(second.Record.ContainerId, refilled.IdleMembers);
        }
        finally
        {
            await Agent.DestroySessionAsync(first.KernelId);
            await Agent.DestroySessionAsync(second.KernelId);
        }
        await AssertGoneAsync(first.Record);
        await AssertGoneAsync(second.Record);
        Assert.DoesNotContain(first.Record.ContainerId, Pool.IdleMembers);
    }

    [Fact]
    public async Task A_claim_takes_the_interpreter_started_before_it_and_a_startup_variable_gets_a_fresh_one()
    {
        await fixture.EnsurePoolAsync();
        await FullAsync();
        // /proc/self/environ is what the process started with; os.environ is what it has now (and hands to children).
        const string Probe = "import os, subprocess\n" +
                             "started = open('/proc/self/environ', 'rb').read().split(b'\\0')\n" +
                             "print(os.environ['WHO'], any(e.startswith(b'WHO=') for e in started), subprocess.check_output(['sh', '-c', 'echo $WHO']).decode().strip())";
        var warm = await CreateAsync(new SessionRequest { Image = "", Environment = new Dictionary<string, string> { ["WHO"] = "tenant-warm" } });
        Session? fresh = null;
        try
        {
            Assert.Equal(CreatePath.Pooled, warm.CreatePath);
            Assert.Equal("tenant-warm False tenant-warm\n", await RunAsync(warm, Probe));

            await FullAsync();
            fresh = await CreateAsync(new SessionRequest
            {
                Image = "",
                Environment = new Dictionary<string, string> { ["WHO"] = "tenant-fresh", ["PYTHONDONTWRITEBYTECODE"] = "1" },
            });
            Assert.Equal(CreatePath.Pooled, fresh.CreatePath);
            Assert.Equal("tenant-fresh True tenant-fresh\n", await RunAsync(fresh, Probe));
            Assert.Equal("True\n", await RunAsync(fresh, "import sys; print(sys.flags.dont_write_bytecode == 1)"));
        }
        finally
        {
            await Agent.DestroySessionAsync(warm.KernelId);
            if (fresh is not null)
                await Agent.DestroySessionAsync(fresh.KernelId);
        }
    }

    [Fact]
    public async Task Concurrent_claims_never_share_a_member_and_a_mount_bearing_request_goes_cold()
    {
        await fixture.EnsurePoolAsync();
        await FullAsync();
        var sessions = await Task.WhenAll(Enumerable.Range(0, 3).Select(i => CreateAsync(new SessionRequest
        {
            Image = "",
            Environment = new Dictionary<string, string> { ["WHO"] = $"tenant-{i}" },
        })));
        var mountDir = Path.Combine(fixture.MountRoot, "data");
        Directory.CreateDirectory(mountDir);
        Session? mounted = null;
        try
        {
            Assert.Equal(3, sessions.Select(s => s.Record.ContainerId).Distinct().Count());
            Assert.True(sessions.Count(s => s.CreatePath == CreatePath.Pooled) is >= 1 and <= 2);
            for (var i = 0; i < 3; i++)
                Assert.Equal($"tenant-{i}\n", await RunAsync(sessions[i], "import os; print(os.environ['WHO'])"));

            var claims = Pool.Claims;
            mounted = await CreateAsync(new SessionRequest { Image = "", Mounts = [new MountRequest(mountDir, "/mnt/data", true)] });
            Assert.Equal(CreatePath.Cold, mounted.CreatePath);
            Assert.Equal(mounted.KernelId, mounted.Record.ContainerId);
            Assert.Equal(claims, Pool.Claims);
        }
        finally
        {
            foreach (var s in sessions)
                await Agent.DestroySessionAsync(s.KernelId);
            if (mounted is not null)
                await Agent.DestroySessionAsync(mounted.KernelId);
        }
        foreach (var s in sessions)
            await AssertGoneAsync(s.Record);
    }

    [Fact]
    public async Task A_member_killed_while_idle_is_replaced_and_never_handed_out()
    {
        await fixture.EnsurePoolAsync();
        var full = await FullAsync();
        var victim = full.IdleMembers[0];
        await Agent.Containerd.Tasks.KillAsync(victim, 9);
        await Eventually.WaitAsync(async () => await Agent.Containerd.Containers.FindAsync(victim) is null && !Pool.IdleMembers.Contains(victim),
            "the killed member to be reaped", Fill);
        Assert.True(Pool.Discarded >= 1);
        var a = await CreateAsync();
        var b = await CreateAsync();
        try
        {
            Assert.NotEqual(victim, a.Record.ContainerId);
            Assert.NotEqual(victim, b.Record.ContainerId);
            Assert.Equal("ok\n", await RunAsync(a, "print('ok')"));
        }
        finally
        {
            await Agent.DestroySessionAsync(a.KernelId);
            await Agent.DestroySessionAsync(b.KernelId);
        }
        await FullAsync();
    }

    [Fact]
    public async Task Pooled_members_count_against_capacity_and_give_way_to_a_real_request()
    {
        await fixture.EnsurePoolAsync();
        await FullAsync();
        Assert.True(Agent.Resources.Used.Cpus >= 1.0 - 1e-9, $"the idle members hold {Agent.Resources.Used.Cpus} cpu");
        var evictions = Pool.Evictions;
        // 1.5 cpu on a 2-cpu host with 1 cpu pooled: only room if a member gives way. No pool has this shape.
        var big = await CreateAsync(new SessionRequest { Image = "", Cpus = 1.5 });
        try
        {
            Assert.Equal(CreatePath.Cold, big.CreatePath);
            Assert.True(Pool.Evictions > evictions);
            Assert.True(Agent.Resources.Used.Cpus <= 2 + 1e-9);
            Assert.True(Pool.Idle + Pool.Filling <= 1, "the refiller took room the real session holds");
            Assert.Equal("ok\n", await RunAsync(big, "print('ok')"));
        }
        finally
        {
            await Agent.DestroySessionAsync(big.KernelId);
        }
        await FullAsync();
    }

    [Fact]
    public async Task Draining_the_pools_reaps_every_member_and_a_fill_under_way_and_later_creates_go_cold()
    {
        await fixture.EnsurePoolAsync();
        await FullAsync();
        var claimed = await CreateAsync();
        Assert.Equal(CreatePath.Pooled, claimed.CreatePath);
        // The claim woke the refiller: drain while it makes the replacement, the moment a teardown used to leak a shim.
        await Eventually.WaitAsync(() => Pool, p => p.Filling > 0 || p.Idle == 2, "the refiller to start a member", Fill);
        await Agent.DrainPoolsAsync();
        Session? cold = null;
        try
        {
            Assert.Equal(0, Pool.Idle);
            Assert.Equal(0, Pool.Filling);
            var census = await AgentLeakCensus.TakeAsync(Agent);
            Assert.Equal([claimed.Record.ContainerId], census.Containers);
            Assert.Equal([claimed.KernelId], census.SessionRecords);
            Assert.Single(census.ShimProcesses);
            Assert.Equal("still here\n", await RunAsync(claimed, "print('still here')"));
            cold = await CreateAsync();
            Assert.Equal(CreatePath.Cold, cold.CreatePath);
        }
        finally
        {
            await Agent.DestroySessionAsync(claimed.KernelId);
            if (cold is not null)
                await Agent.DestroySessionAsync(cold.KernelId);
        }
        var after = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(after.IsClean, after.ToString());
        await fixture.RestartAgentAsync(); // the pool back for the other tests
    }

    [Fact]
    public async Task Recovery_keeps_claimed_sessions_and_reaps_idle_members_of_a_killed_agent()
    {
        await fixture.EnsurePoolAsync();
        await FullAsync();
        var claimed = await CreateAsync(new SessionRequest { Image = "", Environment = new Dictionary<string, string> { ["KEPT"] = "yes" } });
        Assert.Equal(CreatePath.Pooled, claimed.CreatePath);
        var idle = (await FullAsync()).IdleMembers;
        Agent.LeavePoolOnStop = true; // as kill -9 would: idle members and their records stay behind
        await fixture.RestartAgentAsync();
        try
        {
            foreach (var id in idle)
                Assert.Null(await Agent.Containerd.Containers.FindAsync(id));
            var recovered = Agent.GetSession(claimed.KernelId);
            Assert.Equal(claimed.Record.ContainerId, recovered.Record.ContainerId);
            Assert.Equal("yes\n", await RunAsync(recovered, "import os; print(os.environ['KEPT'])"));
            var refilled = await FullAsync();
            Assert.Empty(refilled.IdleMembers.Intersect(idle));
        }
        finally
        {
            await Agent.DestroySessionAsync(claimed.KernelId);
        }
        await AssertGoneAsync(claimed.Record);
        // The census counts the pool's members like sessions: what it finds is theirs and nothing else.
        var members = Pool.IdleMembers.ToHashSet(StringComparer.Ordinal);
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.All(census.Containers, c => Assert.Contains(c, members));
        Assert.All(census.SessionRecords, r => Assert.Contains(r, members));
        Assert.All(census.ScratchDirs, d => Assert.Contains(d, members));
    }
}

public sealed class RuncWarmPoolTests(RuncPoolFixture fixture) : WarmPoolTestsBase(fixture), IClassFixture<RuncPoolFixture>;

public sealed class GvisorWarmPoolTests(GvisorPoolFixture fixture) : WarmPoolTestsBase(fixture), IClassFixture<GvisorPoolFixture>;
