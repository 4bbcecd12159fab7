using System.Diagnostics;
using System.Text;
using KataAgent.Core.HostDirectories;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Core.Tests;

public sealed class HardeningRuncFixture : AgentFixture;
public sealed class HardeningGvisorFixture : AgentFixture;

/// <summary>
/// Issue 13: what a hostile guest leaves in its scratch dir is useless on the host, and the guest's default privileges
/// are a restricted pod's. Every attack runs inside a real session; the host side runs as root and as `nobody`.
/// </summary>
public abstract class HostHardeningTestsBase(AgentFixture fixture, string runtime)
{
    private const int Nobody = 65534;

    private Agent Agent => fixture.Agent;

    private Task<Session> CreateAsync(SessionRequest? request = null) =>
        Agent.CreateSessionAsync((request ?? new SessionRequest { Image = "" }) with { Image = fixture.ImageName, RuntimeClass = runtime });

    private async Task<string> RunAsync(Session session, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
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

    [Fact]
    public async Task A_setuid_shell_and_a_device_node_left_in_the_scratch_dir_are_useless_on_the_host()
    {
        var session = await CreateAsync();
        var control = Path.Combine(Path.GetTempPath(), "kah-control-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            // The guest plants a setuid-root copy of a shell, and tries a block device node (CAP_MKNOD is withheld).
            var planted = await RunAsync(session, """
                import os, shutil, stat, errno
                shutil.copy('/bin/dash', '/home/work/sh'); os.chmod('/home/work/sh', 0o4755)
                st = os.stat('/home/work/sh')
                try:
                    os.mknod('/home/work/blk', 0o666 | stat.S_IFBLK, os.makedev(7, 0)); made = 'made'
                except OSError as e:
                    made = 'mknod:' + errno.errorcode[e.errno]
                print(oct(st.st_mode & 0o7777), st.st_uid, made)
                """);
            Assert.StartsWith("0o4755 0 mknod:", planted, StringComparison.Ordinal);
            Assert.Equal("0o4755 0 mknod:EPERM", planted);
            var shell = Path.Combine(session.Record.ScratchDir, "work", "sh");
            // The attack really left a setuid-root binary on the host.
            Assert.Equal("4755 0", (await Host("stat", "-c", "%a %u", shell)).Output);

            // As nobody, the path is not even reachable: the data dir is root's alone.
            var asNobody = await AsNobody($"'{shell}' -p -c 'id -u'; echo rc=$?; ls '{session.Record.ScratchDir}' 2>&1; test -e '{shell}' && echo visible || echo hidden");
            Assert.DoesNotContain("\n0\n", "\n" + asNobody + "\n", StringComparison.Ordinal);
            Assert.Contains("Permission denied", asNobody, StringComparison.Ordinal);
            Assert.Contains("rc=126", asNobody, StringComparison.Ordinal);
            Assert.Contains("hidden", asNobody, StringComparison.Ordinal);
            Assert.DoesNotContain("visible", asNobody, StringComparison.Ordinal);

            // The kernel's view of the scratch root: a mount of its own with nosuid and nodev, in place while the session runs.
            var (mount, own, hardened) = ScratchRootMount.Inspect(Agent.Options.ScratchRoot);
            Assert.True(own && hardened, $"{Agent.Options.ScratchRoot}: {mount?.MountPoint} {string.Join(",", mount?.Options ?? new HashSet<string>())}");
            // The guest's own programs in /home/work still run (the mount is not noexec).
            Assert.Equal("runs", await RunAsync(session, "import subprocess\nprint(subprocess.run(['/home/work/sh', '-c', 'echo runs'], capture_output=True, text=True).stdout.strip())"));

            // A device node in the scratch dir (made here by root, as a guest with CAP_MKNOD would) does not open, even
            // for root: EACCES from nodev (a device cgroup would say EPERM). The control node outside the mount opens.
            var node = Path.Combine(session.Record.ScratchDir, "work", "null2");
            var blockNode = Path.Combine(session.Record.ScratchDir, "work", "blk2");
            var disk = (await Host("findmnt", "-no", "MAJ:MIN", "-T", "/")).Output.Split(':');
            Assert.Equal(0, (await Host("mknod", node, "c", "1", "3")).ExitCode);
            Assert.Equal(0, (await Host("mknod", blockNode, "b", disk[0], disk[1])).ExitCode);
            foreach (var deviceNode in new[] { node, blockNode })
            {
                var refused = Assert.Throws<UnauthorizedAccessException>(() => File.OpenHandle(deviceNode, FileMode.Open, FileAccess.Read).Dispose());
                Assert.Contains("Permission denied", refused.InnerException?.Message ?? refused.Message, StringComparison.Ordinal);
            }
            Directory.CreateDirectory(control, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var controlNode = Path.Combine(control, "null2");
            Assert.Equal(0, (await Host("mknod", controlNode, "c", "1", "3")).ExitCode);
            File.OpenHandle(controlNode, FileMode.Open, FileAccess.Read).Dispose();

            // The session ends, its scratch dir stays (gVisor's gofer keeps the file open while it runs: ETXTBSY).
            await Agent.DestroySessionAsync(session.KernelId, keepScratch: true);
            // Even handed the file itself (an fd root opened), nobody gets no euid 0 from it: the scratch mount is nosuid.
            Assert.Equal(Nobody.ToString(System.Globalization.CultureInfo.InvariantCulture), await ExecThroughFdAsNobody(shell));
            // Control: the same trick on a setuid copy outside the scratch mount does give euid 0 (so the check above can fail).
            var controlShell = Path.Combine(control, "sh");
            File.Copy(shell, controlShell);
            File.SetUnixFileMode(controlShell, (UnixFileMode)0x9ED); // 04755
            Assert.Equal("0", await ExecThroughFdAsNobody(controlShell));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
            // A kept scratch dir keeps its scratch disk mounted: off first, then the dir.
            var kept = KataAgent.Core.Scratch.ScratchDirectory.Open(Agent.Options.ScratchRoot, session.KernelId);
            await KataAgent.Core.ScratchQuota.ScratchDisks.For(Agent.Options, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance)
                .UnmountAsync(session.KernelId, kept.WorkPath, CancellationToken.None);
            await kept.RemoveAsync();
            if (Directory.Exists(control))
                Directory.Delete(control, recursive: true);
        }
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task Ptrace_process_vm_readv_and_mknod_fail_inside_the_session_and_swap_is_capped_at_the_memory_limit()
    {
        var session = await CreateAsync();
        try
        {
            var result = await RunAsync(session, """
                import ctypes, os, stat, errno
                libc = ctypes.CDLL(None, use_errno=True)
                def err(r):
                    return 'ok' if r != -1 else errno.errorcode[ctypes.get_errno()]
                libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
                attach = err(libc.ptrace(16, 1, None, None))  # PTRACE_ATTACH to the runner (PID 1)
                class iovec(ctypes.Structure):
                    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
                try:
                    remote_at = int(open('/proc/1/maps').readline().split('-')[0], 16)
                except Exception:
                    remote_at = 0x400000
                buf = ctypes.create_string_buffer(64)
                local = iovec(ctypes.cast(buf, ctypes.c_void_p), 64); remote = iovec(remote_at, 64)
                libc.process_vm_readv.restype = ctypes.c_ssize_t
                libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
                readv = err(libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
                try:
                    os.mknod('/tmp/null2', 0o666 | stat.S_IFCHR, os.makedev(1, 3)); mknod = 'ok'
                except OSError as e:
                    mknod = errno.errorcode[e.errno]
                try:
                    os.mknod('/home/work/null2', 0o666 | stat.S_IFCHR, os.makedev(1, 3)); shared = 'ok'
                except OSError as e:
                    shared = errno.errorcode[e.errno]
                bounding = int([l for l in open('/proc/self/status') if l.startswith('CapBnd:')][0].split()[1], 16)
                withheld = [n for n, bit in (('MKNOD', 27), ('SETFCAP', 31), ('NET_RAW', 13), ('SYS_PTRACE', 19)) if bounding >> bit & 1]
                print(attach, readv, mknod, shared, withheld)
                """);
            if (runtime == "runc")
            {
                Assert.Equal("EPERM EPERM EPERM EPERM []", result);
            }
            else
            {
                // gVisor: its own kernel refuses the attach; process_vm_readv does not exist there; the capabilities are
                // withheld all the same and the shared dir takes no node. (Its sentry lets a node be made in its own
                // in-memory /tmp, where it names a sentry device, not a host one.)
                var fields = result.Split(' ', 5);
                Assert.True(fields[0] == "EPERM" && fields[1] is "EPERM" or "ENOSYS" && fields[3] == "EPERM" && fields[4] == "[]", result);
            }

            // The cgroup the runtime made on the host: memory+swap is the memory limit (where the host accounts swap).
            var memory = Agent.Services.Cgroups.Hierarchies.FirstOrDefault(h => h.Has("memory"));
            if (memory is not null && !memory.IsUnified && Cgroups.SwapAccounting.OnHost)
            {
                var dir = memory.MountPoint + Agent.Services.Cgroups.ChildPath(session.KernelId);
                var limit = (await File.ReadAllTextAsync(Path.Combine(dir, "memory.limit_in_bytes"))).Trim();
                Assert.Equal(session.Record.MemoryBytes.ToString(System.Globalization.CultureInfo.InvariantCulture), limit);
                Assert.Equal(limit, (await File.ReadAllTextAsync(Path.Combine(dir, "memory.memsw.limit_in_bytes"))).Trim());
            }
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task Secrets_logs_and_records_on_the_host_are_root_only_and_the_guest_user_still_reads_its_own()
    {
        var session = await CreateAsync(new SessionRequest
        {
            Image = "",
            Uid = 1000,
            Gid = 1000,
            Environment = new Dictionary<string, string> { ["SECRET_TOKEN"] = "s3cret" },
            BootstrapScript = "id -u > /home/work/booted\n",
        });
        try
        {
            var config = Path.Combine(session.Record.ScratchDir, "config");
            Assert.Equal("600 1000", (await Host("stat", "-c", "%a %u", Path.Combine(config, "environ.txt"))).Output);
            // bootstrap.sh is in the work dir (/home/work/bootstrap.sh, as Backend.AI's runner has it), the guest user's alone.
            Assert.Equal("700 1000", (await Host("stat", "-c", "%a %u", Path.Combine(session.Record.ScratchDir, "work", "bootstrap.sh"))).Output);
            Assert.False(File.Exists(Path.Combine(config, "bootstrap.sh")));
            Assert.Equal("600 0", (await Host("stat", "-c", "%a %u", session.Record.LogPath)).Output);
            Assert.Equal("600 0", (await Host("stat", "-c", "%a %u", Path.Combine(Agent.Options.StateDir, "sessions", session.KernelId + ".json"))).Output);
            foreach (var dir in new[] { Agent.Options.DataDir, Agent.Options.ScratchRoot, Agent.Options.StateDir, Agent.Options.LogDir })
                Assert.Equal("700 0", (await Host("stat", "-c", "%a %u", dir)).Output);

            // The guest user reads its environment and ran its bootstrap script as itself.
            var seen = await RunAsync(session, """
                import os, time
                for _ in range(100):
                    if os.path.exists('/home/work/booted'): break
                    time.sleep(0.1)
                print(os.getuid(), open('/home/work/booted').read().strip(), 'SECRET_TOKEN=s3cret' in open('/home/config/environ.txt').read())
                """);
            Assert.Equal("1000 1000 True", seen);
            // And nobody on the host reads any of it.
            var asNobody = await AsNobody($"cat '{Path.Combine(config, "environ.txt")}' '{session.Record.LogPath}' 2>&1");
            Assert.DoesNotContain("s3cret", asNobody, StringComparison.Ordinal);
            Assert.Contains("Permission denied", asNobody, StringComparison.Ordinal);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_runtime_class_outside_allowed_classes_is_refused_naming_the_class_and_the_key()
    {
        var options = fixture.Options with { AllowedRuntimeClasses = ["kata", "gvisor"], DefaultRuntimeClass = "gvisor" };
        var registry = await Runtime.RuntimeClassRegistry.CreateAsync(options);
        var e = Assert.Throws<ArgumentException>(() => registry.Resolve("runc"));
        Assert.Contains("'runc'", e.Message, StringComparison.Ordinal);
        Assert.Contains("runtime.allowed_classes", e.Message, StringComparison.Ordinal);
        Assert.Equal("gvisor", registry.Resolve(null).Class.Name);
        // The default never falls back to runc: kata unusable here, gvisor not allowed, runc usable but not the default.
        var noSandbox = await Runtime.RuntimeClassRegistry.CreateAsync(options with { AllowedRuntimeClasses = ["kata", "runc"], DefaultRuntimeClass = "kata" });
        Assert.Equal("kata", noSandbox.DefaultClass);
        Assert.Throws<InvalidOperationException>(() => noSandbox.Resolve(null));
        Assert.Contains("runc is the only runtime class left", noSandbox.FallbackWarning, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ArgumentException>(() => Runtime.RuntimeClassRegistry.CreateAsync(options with { DefaultRuntimeClass = "runc" }));
    }

    private static async Task<string> ExecThroughFdAsNobody(string path)
    {
        // Root opens the file (fd 3); nobody executes it through /proc/self/fd/3 without needing the path.
        var result = await Host("sh", "-c", $"exec setpriv --reuid={Nobody} --regid={Nobody} --clear-groups /proc/self/fd/3 -p -c 'id -u' 3<'{path}'");
        Assert.True(result.ExitCode == 0, result.Output);
        return result.Output;
    }

    private static async Task<string> AsNobody(string script) =>
        (await Host("setpriv", $"--reuid={Nobody}", $"--regid={Nobody}", "--clear-groups", "/bin/sh", "-c", script)).Output;

    private static async Task<(int ExitCode, string Output)> Host(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = "/" };
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, ((await stdout) + (await stderr)).Trim());
    }
}

public sealed class RuncHostHardeningTests(HardeningRuncFixture fixture) : HostHardeningTestsBase(fixture, "runc"), IClassFixture<HardeningRuncFixture>;
public sealed class GvisorHostHardeningTests(HardeningGvisorFixture fixture) : HostHardeningTestsBase(fixture, "gvisor"), IClassFixture<HardeningGvisorFixture>;
