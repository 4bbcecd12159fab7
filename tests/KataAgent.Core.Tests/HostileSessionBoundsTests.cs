using System.Diagnostics;
using System.Globalization;
using System.Text;
using KataAgent.Core.Scratch;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;
using Xunit.Abstractions;

namespace KataAgent.Core.Tests;

public sealed class BoundsRuncFixture : AgentFixture;
public sealed class BoundsGvisorFixture : AgentFixture;

/// <summary>
/// A hostile session pushes past the agent's bounds from inside: a 1 GiB frame written straight to the
/// driver's event channel (fd 4), a 200 MiB print. The agent (in this test process) must stay up with its
/// peak RSS growing by less than <see cref="RssGrowthBoundMiB"/>, each run must end, and the session must
/// stay usable. Peak RSS is the process's VmHWM after resetting it (clear_refs 5) — run this class alone:
/// other test classes in the same process would add their own memory.
/// </summary>
[Collection("hostile-session-bounds")]
public abstract class HostileSessionBoundsTestsBase(AgentFixture fixture, string runtime, ITestOutputHelper output)
{
    public const long RssGrowthBoundMiB = 300;

    protected AgentFixture Fixture { get; } = fixture;
    protected ITestOutputHelper Output { get; } = output;
    private Agent Agent => Fixture.Agent;

    private sealed record RunOutcome(ExecutionResult Result, long StdoutCharacters, string Stderr, string Tail, TimeSpan Elapsed);

    private async Task<RunOutcome> RunCountingAsync(Session session, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(20));
        var started = Stopwatch.StartNew();
        long characters = 0;
        var stderr = new StringBuilder();
        var tail = new StringBuilder();
        ExecutionResult? result = null;
        await foreach (var e in Agent.ExecuteAsync(session.KernelId, "r" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
            null, timeout.Token))
        {
            switch (e)
            {
                case OutputEvent { Item: { Kind: "stdout" } item }:
                    characters += item.Data.Length;
                    tail.Append(item.Data.Length > 64 ? item.Data[^64..] : item.Data);
                    if (tail.Length > 256)
                        tail.Remove(0, tail.Length - 256);
                    break;
                case OutputEvent { Item: { Kind: "stderr" } item }:
                    if (stderr.Length < 64 * 1024)
                        stderr.Append(item.Data);
                    break;
                case ResultEvent end:
                    result = end.Result;
                    break;
            }
        }
        return new RunOutcome(result!, characters, stderr.ToString(), tail.ToString(), started.Elapsed);
    }

    private static long StatusKiB(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        }
        throw new InvalidOperationException("no " + field);
    }

    private static long ResetPeakRss()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        // "5" resets VmHWM (the peak resident set) to the current RSS.
        File.WriteAllText("/proc/self/clear_refs", "5");
        return StatusKiB("VmRSS");
    }

    [Fact]
    public async Task A_1GiB_driver_frame_and_a_200MiB_print_leave_the_agent_up_and_within_its_memory_bound()
    {
        var session = await Agent.CreateSessionAsync(new SessionRequest
        {
            Image = Fixture.ImageName,
            RuntimeClass = runtime,
            MemoryBytes = 2L << 30,
        });
        try
        {
            var baseline = ResetPeakRss();

            // User code writes one valid 1 GiB stdout frame straight to the driver's channel (in 1 MiB writes:
            // the guest needs no 1 GiB buffer; the runner never sees the frame whole either).
            var frame = await RunCountingAsync(session, """
                import os, struct
                os.write(4, struct.pack('>cI', b'o', 1 << 30))
                chunk = b'\0' * (1 << 20)
                for _ in range(1024):
                    os.write(4, chunk)
                print('after the frame')
                """);
            var afterFrame = StatusKiB("VmHWM");
            Output.WriteLine($"{runtime} 1 GiB frame: exit {frame.Result.ExitCode}, {frame.StdoutCharacters} characters delivered, " +
                $"{frame.Result.DroppedCharacters} dropped, {frame.Elapsed.TotalSeconds:0.0} s; peak RSS {baseline / 1024} -> {afterFrame / 1024} MiB");
            Assert.True(frame.Result.ExitCode == 0, $"exit {frame.Result.ExitCode}: {frame.Stderr}");
            Assert.EndsWith("after the frame\n", frame.Tail);
            Assert.Equal((1L << 30) + "after the frame\n".Length, frame.StdoutCharacters + frame.Result.DroppedCharacters);
            Assert.True(afterFrame - baseline < RssGrowthBoundMiB * 1024, $"peak RSS grew by {(afterFrame - baseline) / 1024} MiB (bound {RssGrowthBoundMiB})");

            baseline = ResetPeakRss();
            var print = await RunCountingAsync(session, "print('p' * (200 << 20)); print('after the print')");
            var afterPrint = StatusKiB("VmHWM");
            Output.WriteLine($"{runtime} 200 MiB print: exit {print.Result.ExitCode}, {print.StdoutCharacters} characters delivered, " +
                $"{print.Result.DroppedCharacters} dropped, {print.Elapsed.TotalSeconds:0.0} s; peak RSS {baseline / 1024} -> {afterPrint / 1024} MiB");
            Assert.True(print.Result.ExitCode == 0, $"exit {print.Result.ExitCode}: {print.Stderr}");
            Assert.EndsWith("after the print\n", print.Tail);
            Assert.Equal((200L << 20) + 1 + "after the print\n".Length, print.StdoutCharacters + print.Result.DroppedCharacters);
            Assert.True(afterPrint - baseline < RssGrowthBoundMiB * 1024, $"peak RSS grew by {(afterPrint - baseline) / 1024} MiB (bound {RssGrowthBoundMiB})");

            // The session is still usable, with its interpreter state.
            var after = await RunCountingAsync(session, "print(6 * 7)");
            Assert.Equal(0, after.Result.ExitCode);
            Assert.EndsWith("42\n", after.Tail);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_frame_the_driver_never_writes_ends_the_run_with_a_reason_and_the_session_goes_on()
    {
        var session = await Agent.CreateSessionAsync(new SessionRequest { Image = Fixture.ImageName, RuntimeClass = runtime });
        try
        {
            var broken = await RunCountingAsync(session, "import os, struct\nx = 1\nos.write(4, struct.pack('>cI', b'f', 3 << 30))\nimport time; time.sleep(60)");
            Assert.NotEqual(0, broken.Result.ExitCode);
            Assert.Contains("event channel (fd 4)", broken.Stderr);
            Assert.Contains("control frames are at most", broken.Stderr);

            var next = await RunCountingAsync(session, "print('x' in globals())");
            Assert.Equal(0, next.Result.ExitCode);
            Assert.EndsWith("False\n", next.Tail); // a fresh interpreter: the state was lost, and the output says so
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }
}

public sealed class HostileSessionBoundsRuncTests(BoundsRuncFixture fixture, ITestOutputHelper output)
    : HostileSessionBoundsTestsBase(fixture, "runc", output), IClassFixture<BoundsRuncFixture>
{
    private Agent Agent => Fixture.Agent;

    [Fact]
    public async Task Asking_for_1000_service_ports_fails_with_a_clear_error_and_the_pool_is_untouched()
    {
        var before = Agent.Services.Ports.InUse.ToList();
        var error = await Assert.ThrowsAsync<SessionRequestException>(() => Agent.CreateSessionAsync(new SessionRequest
        {
            Image = Fixture.ImageName,
            RuntimeClass = "runc",
            ServicePorts = [new ServicePortDefinition("greedy", "tcp", Enumerable.Range(10_000, 1000).ToList())],
        }));
        Assert.Contains("1000 service ports", error.Message);
        Assert.Contains("at most 32", error.Message);
        Assert.Contains("limits.ports_per_session", error.Message);
        Assert.Equal(before, Agent.Services.Ports.InUse.ToList());
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(census.IsClean, census.ToString());

        // At the limit is fine: the session record (34 ports) passes containerd's 4 KiB label limit and is
        // carried in parts that read back whole.
        var session = await Agent.CreateSessionAsync(new SessionRequest
        {
            Image = Fixture.ImageName,
            RuntimeClass = "runc",
            ServicePorts = [new ServicePortDefinition("some-service-with-a-long-name", "tcp", Enumerable.Range(10_000, 32).ToList())],
        });
        Assert.Equal(34, session.Record.Ports.Count);
        var labels = (await Agent.Containerd.Containers.GetAsync(session.Record.ContainerId)).Labels;
        Assert.True(labels.ContainsKey(SessionLabels.Record + ".1"), "a 34-port record should need more than one label");
        Assert.True(SessionLabels.TryReadRecord(labels, out var json));
        Assert.Equal(34, SessionRecord.FromJson(json).Ports.Count);
        await Agent.DestroySessionAsync(session.KernelId);
        Assert.Equal(before, Agent.Services.Ports.InUse.ToList());
    }

    [Fact]
    public async Task A_million_files_list_at_the_limit_in_bounded_time_and_memory_and_destroy_removes_them()
    {
        const int Files = 1_000_000;
        var session = await Agent.CreateSessionAsync(new SessionRequest { Image = Fixture.ImageName, RuntimeClass = "runc" });
        var workPath = ScratchDirectory.Open(Agent.Options.ScratchRoot, session.KernelId).WorkPath;
        var destroyed = false;
        try
        {
            var created = Stopwatch.StartNew();
            using (var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(30)))
            {
                await foreach (var e in Agent.ExecuteAsync(session.KernelId, "mk", ExecutionMode.Query, $$"""
                    import os
                    os.mkdir('many')
                    for i in range({{Files}}):
                        os.close(os.open('many/%07d' % i, os.O_CREAT | os.O_WRONLY, 0o644))
                    print('made', len(os.listdir('many')))
                    """, null, timeout.Token))
                {
                    if (e is ResultEvent r)
                        Assert.Equal(0, r.Result.ExitCode);
                }
            }
            Output.WriteLine($"created {Files} files in {created.Elapsed.TotalSeconds:0} s");

            var baseline = ResetPeakRssForListing();
            var listing = Stopwatch.StartNew();
            var entries = await Agent.Files(session.KernelId).ListAsync("many");
            listing.Stop();
            var peak = PeakRssKiB();
            Output.WriteLine($"listing: {entries.Count} entries, truncated={entries.Truncated}, {listing.Elapsed.TotalMilliseconds:0} ms, peak RSS +{(peak - baseline) / 1024} MiB");
            Assert.True(entries.Truncated);
            Assert.Equal(Agent.Options.ListMaxEntries, entries.Count);
            Assert.True(listing.Elapsed < TimeSpan.FromSeconds(60), $"listing took {listing.Elapsed}");
            Assert.True(peak - baseline < 200 * 1024, $"listing grew the peak RSS by {(peak - baseline) / 1024} MiB");

            var tar = await Assert.ThrowsAsync<ScratchPathException>(() => Agent.Files(session.KernelId).DownloadDirectoryAsTarAsync("many", Stream.Null, long.MaxValue));
            Assert.Contains("too many entries", tar.Message);

            baseline = ResetPeakRssForListing();
            var removal = Stopwatch.StartNew();
            await Agent.DestroySessionAsync(session.KernelId);
            destroyed = true;
            peak = PeakRssKiB();
            Output.WriteLine($"destroy: {removal.Elapsed.TotalSeconds:0} s, peak RSS +{(peak - baseline) / 1024} MiB");
            Assert.False(Directory.Exists(workPath));
            Assert.True(peak - baseline < 200 * 1024, $"destroy grew the peak RSS by {(peak - baseline) / 1024} MiB");
            var census = await AgentLeakCensus.TakeAsync(Agent);
            Assert.True(census.IsClean, census.ToString());
        }
        finally
        {
            if (!destroyed)
                await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    private static long ResetPeakRssForListing()
    {
        GC.Collect();
        File.WriteAllText("/proc/self/clear_refs", "5");
        return PeakRssKiB();
    }

    private static long PeakRssKiB()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        }
        throw new InvalidOperationException("no VmHWM");
    }
}

public sealed class HostileSessionBoundsGvisorTests(BoundsGvisorFixture fixture, ITestOutputHelper output)
    : HostileSessionBoundsTestsBase(fixture, "gvisor", output), IClassFixture<BoundsGvisorFixture>;
