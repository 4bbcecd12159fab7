using System.Globalization;
using System.Text;
using KataAgent.Core.ScratchQuota;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace KataAgent.Core.Tests;

public sealed class ScratchDiskRuncFixture : AgentFixture;
public sealed class ScratchDiskGvisorFixture : AgentFixture;

/// <summary>
/// The work dir's hard size limit (a loop-mounted ext4 image per session, docs/DISK.md), attacked from inside real
/// sessions: filling it and fallocate past it fail with ENOSPC in that session only, the host pays no more than the
/// quota, and nothing of the disk (mount, loop device, image) outlives the session.
/// </summary>
public abstract class ScratchDiskTestsBase(AgentFixture fixture, string runtime, ITestOutputHelper output)
{
    private const long Quota = 64L << 20;

    private Agent Agent => fixture.Agent;

    private ScratchDisks Disks => ScratchDisks.For(Agent.Options, NullLogger.Instance);

    private Task<Session> CreateAsync(long? scratchBytes) =>
        Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime, ScratchBytes = scratchBytes });

    private async Task<string> RunAsync(Session session, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        await foreach (var e in Agent.ExecuteAsync(session.KernelId, "r" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
            new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) }, timeout.Token))
        {
            if (e is OutputEvent o)
                (o.Item.Kind == "stdout" ? stdout : stderr).Append(o.Item.Data);
        }
        Assert.True(!stderr.ToString().Contains("Traceback", StringComparison.Ordinal), $"the session's code failed:\n{stderr}");
        return stdout.ToString().Trim();
    }

    // Writes 1 MiB chunks up to twice the quota (bounded, so a missing quota cannot fill the host), then fsyncs;
    // prints the bytes the kernel accepted and the first error's errno name.
    private const string FillCode = """
        import os, errno
        def fill(path, limit):
            written, err = 0, 'none'
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                chunk = b'\x5a' * (1 << 20)
                while written < limit:
                    written += os.write(fd, chunk)
                os.fsync(fd)
            except OSError as e:
                err = errno.errorcode.get(e.errno, str(e.errno))
            finally:
                try: os.close(fd)
                except OSError as e: err = err if err != 'none' else errno.errorcode.get(e.errno, str(e.errno))
            return written, err
        def falloc(path, size):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, size); return 'none'
            except OSError as e:
                return errno.errorcode.get(e.errno, str(e.errno))
            finally:
                os.close(fd)
        """;

    [Fact]
    public async Task Filling_the_scratch_quota_gives_ENOSPC_in_that_session_only_and_costs_the_host_no_more_than_the_quota()
    {
        var hostFreeBefore = HostFreeBytes(fixture.DataDir);
        var full = await CreateAsync(Quota);
        var image = Disks.ImagePath(full.KernelId);
        Assert.Contains(Disks.Mounts(), m => m.EndsWith("/" + full.KernelId + "/work", StringComparison.Ordinal));

        await RunAsync(full, FillCode);
        var fillResult = await RunAsync(full, $"print(*fill('/home/work/fill', {2 * Quota}))");
        output.WriteLine($"{runtime}: fill -> {fillResult}");
        var parts = fillResult.Split(' ');
        var written = long.Parse(parts[0], CultureInfo.InvariantCulture);
        Assert.Equal("ENOSPC", parts[1]);
        Assert.InRange(written, Quota / 2, Quota * 2);

        // fallocate is the cheap way to grab disk: refused just the same.
        var falloc = await RunAsync(full, "print(falloc('/home/work/big', 1 << 30))");
        output.WriteLine($"{runtime}: fallocate 1 GiB -> {falloc}");
        Assert.Equal("ENOSPC", falloc);

        // What the host paid: the image's allocated blocks (exact, unlike df on a disk other processes share).
        var allocated = AllocatedBytes(image);
        var hostFreeAfter = HostFreeBytes(fixture.DataDir);
        output.WriteLine($"{runtime}: image allocated {allocated >> 20} MiB for a {Quota >> 20} MiB quota; host free space {hostFreeBefore >> 20} -> {hostFreeAfter >> 20} MiB");
        Assert.InRange(allocated, Quota / 2, Quota + (2L << 20));

        // Another session is untouched: it creates, and writes to its own disk.
        var other = await CreateAsync(Quota);
        await RunAsync(other, FillCode);
        Assert.Equal($"{Quota / 2} none", await RunAsync(other, $"print(*fill('/home/work/f', {Quota / 2}))"));

        // Deleting gives the blocks back to the host (discard punches holes in the image).
        await RunAsync(full, "import os; os.remove('/home/work/fill'); os.remove('/home/work/big'); os.sync(); print('ok')");

        await Agent.DestroySessionAsync(full.KernelId);
        await Agent.DestroySessionAsync(other.KernelId);
        Assert.False(File.Exists(image), "image left");
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task The_default_quota_applies_and_the_guest_sees_its_size()
    {
        var session = await CreateAsync(null);
        try
        {
            // statvfs inside the session: the disk's size, not the host's.
            var size = long.Parse(await RunAsync(session, "import os; s = os.statvfs('/home/work'); print(s.f_blocks * s.f_frsize)"),
                CultureInfo.InvariantCulture);
            output.WriteLine($"{runtime}: /home/work is {size >> 20} MiB for a default of {fixture.Options.Resources.DefaultScratchBytes >> 20} MiB");
            Assert.InRange(size, fixture.Options.Resources.DefaultScratchBytes * 9 / 10, fixture.Options.Resources.DefaultScratchBytes);
            // The user owns the disk's root, and there is no lost+found in it.
            Assert.Equal("[]", await RunAsync(session, "import os; print(os.listdir('/home/work'))"));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    internal static long HostFreeBytes(string path) => new DriveInfo(path).AvailableFreeSpace;

    internal static long AllocatedBytes(string path)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%b %B", path]) { RedirectStandardOutput = true };
        using var process = System.Diagnostics.Process.Start(psi)!;
        var fields = process.StandardOutput.ReadToEnd().Trim().Split(' ');
        process.WaitForExit();
        return long.Parse(fields[0], CultureInfo.InvariantCulture) * long.Parse(fields[1], CultureInfo.InvariantCulture);
    }
}

public sealed class RuncScratchDiskTests(ScratchDiskRuncFixture fixture, ITestOutputHelper output)
    : ScratchDiskTestsBase(fixture, "runc", output), IClassFixture<ScratchDiskRuncFixture>
{
    private Agent Agent => fixture.Agent;

    [Fact]
    public async Task Disks_of_vanished_sessions_go_at_start_up_and_a_live_session_keeps_its_disk()
    {
        var disks = ScratchDisks.For(Agent.Options, NullLogger.Instance);
        var live = await Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = "runc", ScratchBytes = 32L << 20 });
        await RunIn(live, "open('/home/work/kept', 'w').write('kept')");

        // As a killed agent leaves them: a disk mounted in a scratch dir no session owns, and an image whose loop
        // device is attached but never mounted.
        var orphanWork = Path.Combine(Agent.Options.ScratchRoot, "orphan-disk", "work");
        Directory.CreateDirectory(orphanWork);
        await disks.MountAsync("orphan-disk", orphanWork, 32L << 20, 0, 0, CancellationToken.None);
        var loose = disks.ImagePath("orphan-loop");
        await File.WriteAllBytesAsync(loose, new byte[1 << 20]);
        var attach = System.Diagnostics.Process.Start("losetup", ["--find", loose])!;
        await attach.WaitForExitAsync();
        Assert.Equal(0, attach.ExitCode);
        Assert.Contains(disks.LoopDevices(), l => l.EndsWith(loose, StringComparison.Ordinal));

        await fixture.RestartAgentAsync();
        Assert.DoesNotContain(disks.Mounts(), m => m.Contains("orphan-disk", StringComparison.Ordinal));
        Assert.DoesNotContain(disks.LoopDevices(), l => l.Contains("orphan", StringComparison.Ordinal));
        Assert.DoesNotContain(disks.Images(), i => i.Contains("orphan", StringComparison.Ordinal));
        Assert.False(Directory.Exists(Path.Combine(Agent.Options.ScratchRoot, "orphan-disk")));

        // The recovered session still has its disk and what it wrote.
        Assert.Contains(disks.Mounts(), m => m.Contains(live.KernelId, StringComparison.Ordinal));
        Assert.Equal("kept", (await ExecuteAsync(live.KernelId, "print(open('/home/work/kept').read())")).Trim());

        await Agent.DestroySessionAsync(live.KernelId);
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task A_scratch_size_below_the_minimum_is_refused_with_the_problem_named()
    {
        var e = await Assert.ThrowsAsync<SessionRequestException>(() =>
            Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = "runc", ScratchBytes = 1 << 20 }));
        Assert.Contains("scratch size 1048576 bytes is below the 16 MiB minimum", e.Message, StringComparison.Ordinal);
    }

    private async Task RunIn(Session session, string code) => await ExecuteAsync(session.KernelId, code);

    private async Task<string> ExecuteAsync(string kernelId, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var stdout = new StringBuilder();
        await foreach (var e in Agent.ExecuteAsync(kernelId, "r" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
            new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) }, timeout.Token))
        {
            if (e is OutputEvent { Item.Kind: "stdout" } o)
                stdout.Append(o.Item.Data);
        }
        return stdout.ToString();
    }
}

public sealed class GvisorScratchDiskTests(ScratchDiskGvisorFixture fixture, ITestOutputHelper output)
    : ScratchDiskTestsBase(fixture, "gvisor", output), IClassFixture<ScratchDiskGvisorFixture>;
