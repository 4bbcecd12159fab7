using KataAgent.Core.Scratch;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Core.Tests;

public sealed class LifecycleAgentFixture : AgentFixture;

/// <summary>Create rollback, files through the scratch dir against a hostile guest, logs, restart, reconciliation.</summary>
public sealed class SessionLifecycleTests(LifecycleAgentFixture fixture) : IClassFixture<LifecycleAgentFixture>
{
    private Agent Agent => fixture.Agent;

    private Task<Session> CreateAsync(SessionRequest? request = null) =>
        Agent.CreateSessionAsync((request ?? new SessionRequest { Image = fixture.ImageName }) with { Image = fixture.ImageName, RuntimeClass = "runc" });

    private async Task<ExecutionResult> RunAsync(Session session, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var console = new List<ConsoleItem>();
        await foreach (var e in Agent.ExecuteAsync(session.KernelId, "r-" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
                           new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) }, timeout.Token))
        {
            if (e is OutputEvent o)
                console.Add(o.Item);
            else if (e is ResultEvent r)
                return r.Result with { Console = console };
        }
        throw new InvalidOperationException("no result");
    }

    private static string Out(ExecutionResult r) => string.Concat(r.Console.Where(c => c.Kind == "stdout").Select(c => c.Data));

    public static TheoryData<string> Steps => new(SessionCreator.StepNames);

    [Theory]
    [MemberData(nameof(Steps))]
    public async Task A_failure_before_any_step_leaves_nothing_behind(string step)
    {
        var portsBefore = Agent.Services.Ports.InUse.ToList();
        var ipamDir = Path.Combine("/var/lib/cni/networks", Agent.Options.NetworkName);
        // host-local keeps one file per leased address (plus its lock and last_reserved_ip files).
        int LeasedIps() => Directory.Exists(ipamDir) ? Directory.GetFiles(ipamDir).Count(f => System.Net.IPAddress.TryParse(Path.GetFileName(f), out _)) : 0;
        var ipsBefore = LeasedIps();
        var kernelId = "rollback-" + step + "-" + Guid.NewGuid().ToString("N")[..6];

        Agent.Creator.FailBeforeStep = step;
        try
        {
            var e = await Assert.ThrowsAnyAsync<Exception>(() => CreateAsync(new SessionRequest { Image = fixture.ImageName, KernelId = kernelId }));
            Assert.Contains(step, e.Message, StringComparison.Ordinal);
        }
        finally
        {
            Agent.Creator.FailBeforeStep = null;
        }

        var census = await LeakCensus.TakeAsync(Agent.Containerd, fixture.DataDir);
        Assert.True(census.IsClean, census.ToString());
        Assert.DoesNotContain(HostNetwork.NetnsNames(), n => n.Contains(kernelId, StringComparison.Ordinal));
        Assert.Empty(await HostNetwork.RulesMentioningAsync(kernelId));
        Assert.Equal(portsBefore.Order(), Agent.Services.Ports.InUse.Order());
        Assert.DoesNotContain(Agent.Resources.Allocations, a => a.KernelId == kernelId);
        Assert.False(Directory.Exists(Path.Combine(Agent.Options.ScratchRoot, kernelId)), "scratch dir left");
        Assert.False(File.Exists(Path.Combine(Agent.Options.LogDir, kernelId + ".log")), "log left");
        var disks = ScratchQuota.ScratchDisks.For(Agent.Options, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        Assert.DoesNotContain(disks.Mounts(), m => m.Contains(kernelId, StringComparison.Ordinal));
        Assert.DoesNotContain(disks.LoopDevices(), l => l.Contains(kernelId, StringComparison.Ordinal));
        Assert.DoesNotContain(disks.Images(), i => i.Contains(kernelId, StringComparison.Ordinal));
        Assert.DoesNotContain(await Agent.Services.Store.LoadAllAsync(), r => r.KernelId == kernelId);
        Assert.Equal(ipsBefore, LeasedIps());
        // Rolled back, but remembered: the tombstone says which step failed.
        var ended = Assert.Throws<SessionEndedException>(() => Agent.GetSession(kernelId));
        Assert.Equal($"create-failed (at step {step})", ended.Tombstone.EndReason.Describe());
    }

    [Fact]
    public async Task Bad_requests_are_refused_with_the_problem_named()
    {
        var e = await Assert.ThrowsAsync<SessionRequestException>(() => Agent.CreateSessionAsync(new SessionRequest { Image = "no/such:image", RuntimeClass = "runc" }));
        Assert.Contains("no/such:image", e.Message, StringComparison.Ordinal);
        e = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(new SessionRequest { Image = "x", Cpus = -1 }));
        Assert.Contains("cpu", e.Message, StringComparison.Ordinal);
        e = await Assert.ThrowsAsync<SessionRequestException>(() => CreateAsync(new SessionRequest { Image = "x", Mounts = [new MountRequest("/etc", "/mnt", true)] }));
        Assert.Contains("/etc", e.Message, StringComparison.Ordinal);
        e = await Assert.ThrowsAsync<SessionRequestException>(() => Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = "warp" }));
        Assert.Contains("warp", e.Message, StringComparison.Ordinal);
        var census = await LeakCensus.TakeAsync(Agent.Containerd, fixture.DataDir);
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task Files_round_trip_and_guest_symlinks_never_lead_out()
    {
        var outside = Path.Combine(fixture.DataDir, "outside");
        Directory.CreateDirectory(outside);
        var secret = Path.Combine(outside, "secret");
        await File.WriteAllTextAsync(secret, "host secret");
        var before = File.GetLastWriteTimeUtc(secret);
        var session = await CreateAsync();
        try
        {
            var files = Agent.Files(session.KernelId);
            var payload = new byte[1 << 20];
            Random.Shared.NextBytes(payload);
            await files.UploadAsync("data/in.bin", new MemoryStream(payload), Agent.Options.UploadMaxBytes, createParents: true);
            var seen = await RunAsync(session, "import hashlib; print(hashlib.sha256(open('/home/work/data/in.bin','rb').read()).hexdigest())");
            Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(payload)), Out(seen).Trim());

            await RunAsync(session, "open('/home/work/out.txt','w').write('from the guest')");
            await using (var download = await files.OpenDownloadAsync("out.txt"))
                Assert.Equal("from the guest", await new StreamReader(download).ReadToEndAsync());
            Assert.Contains(await files.ListAsync(""), e => e.Name == "out.txt" && e.Size == 14);

            // The guest plants links to host files and a linked parent directory.
            var planted = await RunAsync(session, $$"""
                import os
                os.symlink('/etc/shadow', '/home/work/shadow')
                os.symlink('{{secret}}', '/home/work/secret')
                os.symlink('{{outside}}', '/home/work/d')
                print('planted')
                """);
            Assert.Contains("planted", Out(planted), StringComparison.Ordinal);
            await Assert.ThrowsAsync<ScratchPathException>(() => files.OpenDownloadAsync("shadow"));
            await Assert.ThrowsAsync<ScratchPathException>(() => files.OpenDownloadAsync("secret"));
            await Assert.ThrowsAsync<ScratchPathException>(() => files.UploadAsync("secret", new MemoryStream("pwned"u8.ToArray()), 100, false));
            await Assert.ThrowsAsync<ScratchPathException>(() => files.UploadAsync("d/planted", new MemoryStream("pwned"u8.ToArray()), 100, true));
            await Assert.ThrowsAsync<ScratchPathException>(() => files.OpenDownloadAsync("d/secret"));
            await Assert.ThrowsAsync<ScratchPathException>(() => files.OpenDownloadAsync("../../../etc/passwd"));
            Assert.Equal("host secret", await File.ReadAllTextAsync(secret));
            Assert.Equal(before, File.GetLastWriteTimeUtc(secret));
            Assert.False(File.Exists(Path.Combine(outside, "planted")));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
        Assert.Equal("host secret", await File.ReadAllTextAsync(secret));
    }

    [Fact]
    public async Task Logs_restart_and_reconciliation()
    {
        var sessions = new List<Session>();
        try
        {
            for (var i = 0; i < 3; i++)
                sessions.Add(await CreateAsync());
            var first = sessions[0];

            // The runner logs to the container log; reading and following work.
            var log = await Agent.ReadLogAsync(first.KernelId);
            Assert.False(string.IsNullOrWhiteSpace(log), "empty container log");

            // Three live sessions survive three rounds.
            for (var round = 0; round < 3; round++)
            {
                var report = await Agent.ReconcileAsync();
                Assert.Empty(report.ReapedStrays);
                Assert.Empty(report.CleanedVanished);
            }
            foreach (var s in sessions)
                Assert.Equal("ok\n", Out(await RunAsync(Agent.GetSession(s.KernelId), "print('ok')")));

            // Restart: new container, same scratch and ports.
            await RunAsync(first, "open('/home/work/keep.txt','w').write('kept'); x = 5");
            var portsBefore = first.Record.Ports;
            var restarted = await Agent.RestartSessionAsync(first.KernelId);
            Assert.Equal(portsBefore, restarted.Record.Ports);
            var after = await RunAsync(restarted, "print(open('/home/work/keep.txt').read()); print('x' in globals())");
            Assert.Equal("kept\nFalse\n", Out(after));

            // A container nobody owns is a stray; a session whose container vanished is cleaned.
            var victim = sessions[1];
            await Agent.Containerd.Tasks.KillAsync(victim.Record.ContainerId, 9, all: true);
            await Agent.Containerd.Tasks.WaitAsync(victim.Record.ContainerId);
            await Agent.Containerd.Tasks.DeleteAsync(victim.Record.ContainerId);
            await Agent.Containerd.Containers.DeleteAsync(victim.Record.ContainerId);
            var cleaned = await Agent.ReconcileAsync();
            Assert.Equal([victim.KernelId], cleaned.CleanedVanished);
            // Its task was killed before the container went: the exit event (signaled) or, when reconcile came first, the reconcile's destroy.
            Assert.Contains(Assert.Throws<SessionEndedException>(() => Agent.GetSession(victim.KernelId)).Tombstone.EndReason.Describe(),
                (string[])["signaled (signal 9)", "destroyed (by reconcile)"]);
            Assert.False(Directory.Exists(victim.Record.ScratchDir));
            Assert.DoesNotContain(HostNetwork.NetnsNames(), n => victim.Record.NetnsPath.EndsWith("/" + n, StringComparison.Ordinal));
            sessions.Remove(victim);
            foreach (var s in sessions)
                Assert.Equal("ok\n", Out(await RunAsync(Agent.GetSession(s.KernelId), "print('ok')")));
        }
        finally
        {
            foreach (var s in sessions)
                await Agent.DestroySessionAsync(s.KernelId);
        }
        var census = await LeakCensus.TakeAsync(Agent.Containerd, fixture.DataDir);
        Assert.True(census.IsClean, census.ToString());
    }
}
