using Io.Containerd.Cgroups.V1;
using KataAgent.Containerd.Services;
using KataAgent.Core.Sessions;
using KataAgent.Core.Stats;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;
using Xunit.Abstractions;
using V2 = Io.Containerd.Cgroups.V2;

namespace KataAgent.Core.Tests;

/// <summary>An agent whose stats collector samples fast and keeps a short history, so tests can watch it wrap.</summary>
public abstract class FastStatsAgentFixture : AgentFixture, IAsyncLifetime
{
    public const int HistoryLength = 4;

    async Task IAsyncLifetime.InitializeAsync()
    {
        await InitializeAsync();
        Agent.StatsOptions = new StatsOptions { Interval = TimeSpan.FromMilliseconds(500), HistoryLength = HistoryLength };
    }

    Task IAsyncLifetime.DisposeAsync() => DisposeAsync();
}

public sealed class RuncStatsFixture : FastStatsAgentFixture;
public sealed class GvisorStatsFixture : FastStatsAgentFixture;

/// <summary>Runs code in a session through the agent (the kernel runner's query mode).</summary>
public static class SessionCode
{
    public static async Task<string> RunAsync(Agent agent, Session session, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var runId = "run-" + Guid.NewGuid().ToString("N")[..6];
        var stdout = new System.Text.StringBuilder();
        var stderr = new System.Text.StringBuilder();
        var options = new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) };
        await foreach (var e in agent.ExecuteAsync(session.KernelId, runId, ExecutionMode.Query, code, options, timeout.Token))
        {
            switch (e)
            {
                case OutputEvent { Item.Kind: "stdout" } o:
                    stdout.Append(o.Item.Data);
                    break;
                case OutputEvent { Item.Kind: "stderr" } o:
                    stderr.Append(o.Item.Data);
                    break;
                case ResultEvent r:
                    if (r.Result.Status != ExecutionStatus.Finished || stderr.Length > 0)
                        throw new InvalidOperationException($"code failed ({r.Result.Status}): {stderr}\n--- code:\n{code}");
                    return stdout.ToString();
            }
        }
        throw new InvalidOperationException("the run produced no result");
    }
}

/// <summary>Stats of real sessions: CPU, memory, block I/O, network, the periodic history and host totals.</summary>
public abstract class StatsTestsBase(FastStatsAgentFixture fixture, string runtime, ITestOutputHelper output)
{
    private const ulong MiB = 1024 * 1024;

    protected Agent Agent => fixture.Agent;
    protected bool IsGvisor => runtime == "gvisor";

    private Task<Session> CreateAsync(SessionRequest? request = null) =>
        Agent.CreateSessionAsync((request ?? new SessionRequest { Image = fixture.ImageName }) with { RuntimeClass = runtime, Image = fixture.ImageName });

    private Task<string> RunAsync(Session session, string code) => SessionCode.RunAsync(Agent, session, code);

    private async Task<SessionStats> SampleAsync(Session session, string label)
    {
        var stats = await Agent.GetStatsAsync(session.KernelId);
        output.WriteLine($"{runtime} {label}: {stats.ToJson()}");
        return stats;
    }

    [Fact]
    public async Task Cpu_time_and_utilisation_rise_while_the_session_burns_cpu()
    {
        var session = await CreateAsync();
        try
        {
            var first = await SampleAsync(session, "first");
            // Right after create the sandbox and the interpreter are still settling (gVisor's especially, and longer on a
            // busy host): the idle reference is a sample that shows the session quiet.
            var idle = await Eventually.WaitAsync(() => SampleAsync(session, "idle"), s => s.Cpu?.Percent is < 20,
                "the session's CPU utilisation to settle below 20 %", TimeSpan.FromMinutes(1));
            // A fixed amount of work (no syscalls), so the CPU time it costs does not depend on how busy the host is.
            // (gVisor's own process_time counts scheduled-out time as running; the host cgroup does not.)
            await RunAsync(session, "for _ in range(3):\n    for i in range(20_000_000):\n        pass");
            var worked = await SampleAsync(session, "after-work");
            Assert.NotEqual(CgroupCounters.SourceNone, worked.Source);
            Assert.True(worked.Cpu!.UsageNanos - idle.Cpu!.UsageNanos >= 250_000_000,
                $"CPU time rose by {(worked.Cpu.UsageNanos - idle.Cpu.UsageNanos) / 1e9:0.00} s for 60 million loop iterations");
            Assert.True(worked.Cpu.UsageNanos >= worked.Cpu.UserNanos);
            Assert.True(first.Cpu!.UsageNanos <= idle.Cpu.UsageNanos);

            // Utilisation is "since the previous sample" (the collector's own, every 500 ms, or a caller's): measured
            // while a loop burns for 20 s, between a sample that already shows it burning and one a second later.
            var burning = RunAsync(session, "import time\nend = time.monotonic() + 20\nwhile time.monotonic() < end:\n    pass");
            await Eventually.WaitAsync(() => SampleAsync(session, "burn-starting"), s => s.Cpu!.UsageNanos >= worked.Cpu.UsageNanos + 200_000_000,
                "the burn loop to show in the session's CPU time", TimeSpan.FromMinutes(1));
            await Task.Delay(1000); // the measurement window, not a wait for something
            var busy = await SampleAsync(session, "burning");
            Assert.True(busy.Cpu!.Percent > idle.Cpu.Percent, $"utilisation {busy.Cpu.Percent}% while burning, {idle.Cpu.Percent}% idle");
            Assert.Contains(busy, Agent.GetStatsHistory(session.KernelId)); // a caller's sample is kept like the collector's
            await burning;
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task An_allocation_of_200_MiB_shows_in_memory_usage()
    {
        var session = await CreateAsync();
        try
        {
            var before = await SampleAsync(session, "before-alloc");
            await RunAsync(session, "b = bytearray(200 * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1");
            var after = await SampleAsync(session, "after-alloc");

            var grown = after.Memory!.UsageBytes - before.Memory!.UsageBytes;
            Assert.True(grown >= 190 * MiB, $"memory usage grew by {grown / MiB} MiB");
            Assert.True(after.Memory.PeakBytes >= after.Memory.UsageBytes);
            Assert.Equal((ulong)session.Record.MemoryBytes, after.Memory.LimitBytes);
            Assert.True(after.Pids!.Current >= 1);

            await RunAsync(session, "del b");
            var freed = await SampleAsync(session, "after-free");
            Assert.True(freed.Memory!.PeakBytes >= after.Memory.UsageBytes, "the peak remembers the allocation");
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    // O_DIRECT (page-aligned mmap buffer) so the bytes are charged to the session's cgroup even when the machine is
    // busy: on cgroup v1 buffered pages written back by the kernel's flusher are charged to the root instead.
    // Runtimes that refuse O_DIRECT fall back to buffered writes and fsync.
    private const string WriteAndFsync32MiB =
        "import os, mmap\nbuf = mmap.mmap(-1, 1 << 20)\nbuf.write(os.urandom(1 << 20))\n" +
        "def write(path, flags):\n    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags)\n" +
        "    try:\n        for _ in range(32):\n            os.write(fd, buf)\n        os.fsync(fd)\n    finally:\n        os.close(fd)\n" +
        // Not /home/work: that is the session's loop-mounted scratch disk, whose I/O the kernel's loop worker does
        // outside the session's cgroup (docs/DISK.md).
        "try:\n    write('/root/io-test.bin', os.O_DIRECT)\nexcept OSError:\n    write('/root/io-test.bin', 0)";

    /// <summary>
    /// With cgroup v1, Linux 6.x counts a cgroup's blkio bytes only once blk-throttle is active on the device's queue, i.e.
    /// after any cgroup has had a throttle rule for that disk since boot (blk_should_throtl). Until then the counters are
    /// absent, and the agent reports them as null rather than as 0. The test then sets a no-op rule on the session's cgroup
    /// (which activates accounting for the disk) and expects the bytes.
    /// </summary>
    [Fact]
    public async Task Fsynced_writes_show_in_block_io()
    {
        var session = await CreateAsync();
        try
        {
            var before = await SampleAsync(session, "before-write");
            await RunAsync(session, WriteAndFsync32MiB);
            var after = await SampleAsync(session, "after-write");
            if (after.BlockIo is null)
            {
                // A fresh host: no throttle rule since boot, so no counters yet (for runc and gVisor's sandbox alike).
                Assert.True(BlockIoAccounting.Enable(Agent.Services.Cgroups.ChildPath(session.KernelId), fixture.DataDir), "not a cgroup v1 host: nothing to enable");
                before = await SampleAsync(session, "rule-set");
                await RunAsync(session, WriteAndFsync32MiB);
                after = await SampleAsync(session, "after-write-with-rule");
            }
            Assert.NotNull(after.BlockIo);
            var written = after.BlockIo!.WriteBytes - (before.BlockIo?.WriteBytes ?? 0);
            Assert.True(written >= 16 * MiB, $"block I/O written grew by {written} bytes for 32 MiB written and fsynced");
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Traffic_to_a_published_port_shows_in_network_counters()
    {
        var session = await CreateAsync(new SessionRequest
        {
            Image = fixture.ImageName,
            ServicePorts = [new ServicePortDefinition("web", "http", [8080])],
        });
        try
        {
            var port = session.Record.Ports.Single(p => p.Name == "web");
            var started = await session.Runner.StartServiceAsync(new ServiceDefinition
            {
                Name = "web",
                Command = ["python3", "-m", "http.server", "8080"],
                Ports = [8080],
                Protocol = "http",
            });
            Assert.True(started.Status == "started", $"service: {started.Status} {started.Error}");
            var payload = new byte[4 * MiB];
            Random.Shared.NextBytes(payload);
            await File.WriteAllBytesAsync(Path.Combine(session.Record.ScratchDir, "work", "payload.bin"), payload);

            var before = await SampleAsync(session, "before-traffic");
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
            var body = await http.GetByteArrayAsync(new Uri($"http://127.0.0.1:{port.HostPort}/payload.bin"));
            Assert.Equal(payload.Length, body.Length);
            var after = await SampleAsync(session, "after-traffic");

            Assert.NotNull(after.Network);
            Assert.True(after.Network!.RxBytes > before.Network!.RxBytes, "the request reached the session");
            Assert.True(after.Network.RxPackets > before.Network.RxPackets);
            Assert.True(after.Network.TxBytes - before.Network.TxBytes >= payload.Length, "the response left the session");
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task The_collector_keeps_a_bounded_history_for_every_session_and_host_totals()
    {
        var first = await CreateAsync();
        var second = await CreateAsync();
        try
        {
            var collector = Agent.StatsCollector;
            var start = collector.Collections;
            await Eventually.WaitAsync(() => collector.Collections, n => n >= start + FastStatsAgentFixture.HistoryLength + 2,
                $"{FastStatsAgentFixture.HistoryLength + 2} stats collections after the {start} before the test");

            foreach (var session in new[] { first, second })
            {
                var history = Agent.GetStatsHistory(session.KernelId);
                Assert.Equal(FastStatsAgentFixture.HistoryLength, history.Count);
                Assert.All(history, s => Assert.Equal(session.KernelId, s.KernelId));
                Assert.All(history, s => Assert.NotEqual(CgroupCounters.SourceNone, s.Source));
                for (var i = 1; i < history.Count; i++)
                {
                    Assert.True(history[i].Timestamp > history[i - 1].Timestamp);
                    Assert.NotNull(history[i].Cpu?.Percent);
                }
            }

            var host = Agent.HostStats;
            output.WriteLine(host.ToJson());
            Assert.True(host.CpuCount >= 1);
            Assert.True(host.MemoryTotalBytes > host.MemoryAvailableBytes && host.MemoryAvailableBytes > 0);
            Assert.True(host.CpuBusySeconds > 0);
            Assert.True(host.Sessions >= 2);

            await Agent.DestroySessionAsync(second.KernelId);
            var after = collector.Collections;
            await Eventually.WaitAsync(() => collector.Collections, n => n >= after + 2,
                $"2 stats collections after the {after} before the destroy");
            Assert.Throws<SessionEndedException>(() => Agent.GetStatsHistory(second.KernelId));
            Assert.Empty(collector.History(second.KernelId));
        }
        finally
        {
            await Agent.DestroySessionAsync(first.KernelId);
            await Agent.DestroySessionAsync(second.KernelId);
        }
    }
}

public sealed class RuncStatsTests(RuncStatsFixture fixture, ITestOutputHelper output)
    : StatsTestsBase(fixture, "runc", output), IClassFixture<RuncStatsFixture>;

public sealed class GvisorStatsTests(GvisorStatsFixture fixture, ITestOutputHelper output)
    : StatsTestsBase(fixture, "gvisor", output), IClassFixture<GvisorStatsFixture>;

/// <summary>Test side of a no-op blkio throttle rule on a runc session's v1 cgroup, so the kernel accounts its block I/O.</summary>
public static class BlockIoAccounting
{
    public static bool Enable(string sessionCgroup, string pathOnDevice)
    {
        var cgroup = "/sys/fs/cgroup/blkio" + sessionCgroup;
        if (!Directory.Exists(cgroup))
            return false;
        var device = WholeDiskOf(DeviceOf(pathOnDevice));
        File.WriteAllText(Path.Combine(cgroup, "blkio.throttle.write_bps_device"), $"{device} 1000000000000000\n");
        File.WriteAllText(Path.Combine(cgroup, "blkio.throttle.read_bps_device"), $"{device} 1000000000000000\n");
        return true;
    }

    /// <summary>major:minor of the filesystem holding the path (the longest mount point above it, from mountinfo).</summary>
    private static string DeviceOf(string path)
    {
        var full = Path.GetFullPath(path);
        return File.ReadAllLines("/proc/self/mountinfo")
            .Select(l => l.Split(' '))
            .Where(f => full == f[4] || full.StartsWith(f[4].TrimEnd('/') + "/", StringComparison.Ordinal))
            .OrderByDescending(f => f[4].Length)
            .First()[2];
    }

    private static string WholeDiskOf(string device)
    {
        var sys = $"/sys/dev/block/{device}";
        return File.Exists(Path.Combine(sys, "partition")) ? File.ReadAllText(Path.Combine(sys, "..", "dev")).Trim() : device;
    }
}

/// <summary>Decoding and bookkeeping, without containers.</summary>
public sealed class StatsModelTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    [Fact]
    public void Cgroup_v1_metrics_decode()
    {
        var m = new Metrics
        {
            Cpu = new CPUStat { Usage = new CPUUsage { Total = 5_000_000_000, User = 4_000_000_000, Kernel = 1_000_000_000 }, Throttling = new Throttle { ThrottledPeriods = 3 } },
            Memory = new MemoryStat { TotalRss = 100, TotalCache = 50, Usage = new MemoryEntry { Usage = 150, Max = 400, Limit = 9223372036854771712 } },
            Blkio = new BlkIOStat
            {
                IoServiceBytesRecursive =
                {
                    new BlkIOEntry { Op = "Read", Major = 8, Value = 10 },
                    new BlkIOEntry { Op = "Write", Major = 8, Value = 20 },
                    new BlkIOEntry { Op = "Write", Major = 9, Value = 5 },
                    new BlkIOEntry { Op = "Sync", Major = 8, Value = 99 },
                },
            },
            Pids = new PidsStat { Current = 7, Limit = 4096 },
        };
        var c = CgroupCounters.From(new TaskMetrics("k", T0, m, "io.containerd.cgroups.v1.Metrics"));
        Assert.Equal(CgroupCounters.SourceV1, c.Source);
        Assert.Equal(new CpuCounters(5_000_000_000, 4_000_000_000, 1_000_000_000, 3), c.Cpu);
        Assert.Equal(new MemoryCounters(150, 400, null, 100, 50), c.Memory);
        Assert.Equal(new BlockIoStats(10, 25), c.BlockIo);
        Assert.Equal(new PidsStats(7, 4096), c.Pids);
    }

    [Fact]
    public void Cgroup_v2_metrics_decode_and_the_peak_is_what_the_samples_saw()
    {
        static V2.Metrics At(ulong usage) => new()
        {
            Cpu = new V2.CPUStat { UsageUsec = 2_000_000, UserUsec = 1_500_000, SystemUsec = 500_000 },
            Memory = new V2.MemoryStat { Usage = usage, UsageLimit = 1 << 30, Anon = usage, File = 0 },
            Io = new V2.IOStat { Usage = { new V2.IOEntry { Rbytes = 1, Wbytes = 2 }, new V2.IOEntry { Rbytes = 3, Wbytes = 4 } } },
            Pids = new V2.PidsStat { Current = 2 },
        };
        var c = CgroupCounters.From(new TaskMetrics("k", T0, At(300), "io.containerd.cgroups.v2.Metrics"));
        Assert.Equal(CgroupCounters.SourceV2, c.Source);
        Assert.Equal(2_000_000_000UL, c.Cpu!.UsageNanos);
        Assert.Equal(new BlockIoStats(4, 6), c.BlockIo);
        Assert.Null(c.Pids!.Limit);
        Assert.Equal((ulong)(1 << 30), c.Memory!.LimitBytes);

        var history = new SessionStatsHistory("k", 8);
        history.Add(c, null);
        var lower = history.Add(CgroupCounters.FromV2(At(100), T0.AddSeconds(1)), null);
        Assert.Equal(300UL, lower.Memory!.PeakBytes);
        Assert.Equal(100UL, lower.Memory.UsageBytes);
    }

    [Fact]
    public void Block_io_without_any_device_entry_is_unknown_not_zero()
    {
        var c = CgroupCounters.FromV1(new Metrics { Blkio = new BlkIOStat() }, T0);
        Assert.Null(c.BlockIo);
        Assert.Null(CgroupCounters.FromV2(new V2.Metrics { Io = new V2.IOStat() }, T0).BlockIo);
    }

    [Fact]
    public void Unknown_payloads_decode_to_none()
    {
        var c = CgroupCounters.From(new TaskMetrics("k", T0, null, "something.else"));
        Assert.Equal(CgroupCounters.SourceNone, c.Source);
        Assert.Null(c.Cpu);
    }

    [Fact]
    public void History_is_a_ring_and_utilisation_is_the_cpu_delta_over_the_time_delta()
    {
        var history = new SessionStatsHistory("k", 3);
        CgroupCounters At(int second, ulong cpuNanos) =>
            new(CgroupCounters.SourceV1, T0.AddSeconds(second), new CpuCounters(cpuNanos, cpuNanos, 0, 0), null, null, null);
        Assert.Null(history.Add(At(0, 0), null).Cpu!.Percent);
        Assert.Equal(50, history.Add(At(2, 1_000_000_000), null).Cpu!.Percent);
        Assert.Equal(200, history.Add(At(3, 3_000_000_000), null).Cpu!.Percent);
        history.Add(At(4, 3_000_000_000), null);
        var samples = history.Snapshot();
        Assert.Equal([2, 3, 4], samples.Select(s => (int)(s.Timestamp - T0).TotalSeconds));
        Assert.Equal(0, samples[^1].Cpu!.Percent);
        // An older sample (a periodic collection overtaken by an on-demand one) is not stored.
        Assert.Same(samples[^1], history.Add(At(1, 0), null));
        Assert.Equal(3, history.Snapshot().Count);
    }

    [Fact]
    public void Host_totals_parse_proc()
    {
        const string stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\ncpu1 50 0 50 350 50 0 0 0 0 0\nintr 1\n";
        const string stat2 = "cpu  200 0 200 700 100 0 0 0 0 0\ncpu0 100 0 100 350 50 0 0 0 0 0\ncpu1 100 0 100 350 50 0 0 0 0 0\n";
        const string meminfo = "MemTotal:       16000 kB\nMemFree:         1000 kB\nMemAvailable:    4000 kB\nHugePages_Total:       0\n";
        var reader = new HostStatsReader();
        var first = reader.Compute(stat, meminfo, 1, T0);
        Assert.Equal(2, first.CpuCount);
        Assert.Equal(2.0, first.CpuBusySeconds);
        Assert.Equal(40, first.CpuPercent); // since boot: 200 busy of 1000 ticks, two CPUs
        Assert.Equal(16000UL * 1024, first.MemoryTotalBytes);
        Assert.Equal(12000UL * 1024, first.MemoryUsedBytes);
        var second = reader.Compute(stat2, meminfo, 1, T0.AddSeconds(1));
        Assert.Equal(200, second.CpuPercent); // 200 busy of 200 ticks: both CPUs busy
    }
}
