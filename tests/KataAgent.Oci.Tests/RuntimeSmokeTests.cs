using System.Diagnostics;
using static KataAgent.Oci.SpecOpts;

namespace KataAgent.Oci.Tests;

/// <summary>
/// Runs a generated spec under a real OCI runtime: proves runc (and gVisor's runsc) accept it
/// and that the default seccomp profile lets a shell and CPython (threads, subprocess, urandom)
/// work. The rootfs is an empty directory with the host's /usr bind-mounted read-only.
/// </summary>
public sealed class RuntimeSmokeTests : IDisposable
{
    private readonly string _bundle = Path.Combine(Path.GetTempPath(), "oci-smoke-" + Guid.NewGuid().ToString("N")[..12]);

    private const string PythonCheck =
        "import threading, subprocess, os, socket, asyncio\n" +
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n" +
        "out = subprocess.run(['/bin/sh', '-c', 'echo sub'], capture_output=True, text=True).stdout.strip()\n" +
        "a, b = socket.socketpair(); a.send(b'x'); assert b.recv(1) == b'x'\n" +
        "asyncio.run(asyncio.sleep(0))\n" +
        "print('uid', os.getuid(), out, len(os.urandom(8)))\n";

    public void Dispose()
    {
        try
        {
            Directory.Delete(_bundle, recursive: true);
        }
        catch (IOException)
        {
            // A runtime that left a mount behind; nothing a test can do.
        }
    }

    private static string? Which(string name) =>
        Environment.GetEnvironmentVariable("PATH")!.Split(':').Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    private void WriteBundle(Spec spec)
    {
        var rootfs = Path.Combine(_bundle, "rootfs");
        foreach (var dir in new[] { "usr", "etc", "tmp", "proc", "sys", "dev" })
            Directory.CreateDirectory(Path.Combine(rootfs, dir));
        foreach (var link in new[] { "bin", "sbin", "lib", "lib64" })
            File.CreateSymbolicLink(Path.Combine(rootfs, link), "usr/" + link);
        File.WriteAllText(Path.Combine(_bundle, "config.json"), Specs.ToJson(spec));
    }

    private static Spec SmokeSpec(params SpecOpt[] extra) => Specs.Generate(
    [
        WithProcessArgs("/usr/bin/python3", "-I", "-c", PythonCheck),
        WithUidGid(1000, 1000),
        WithBindMount("/usr", "/usr", readOnly: true),
        WithReadonlyRootfs(),
        WithHostname("smoke"),
        WithMemoryLimit(256L << 20),
        WithPidsLimit(256),
        .. extra,
        // This project's CI sandbox lacks CAP_SYS_RESOURCE, so the default 1048576 cannot be set here.
        WithRlimitsCappedToCurrentProcess(),
    ]);

    private (int ExitCode, string Stdout, string Stderr) Run(string runtime, params string[] globalArgs)
    {
        var id = Path.GetFileName(_bundle);
        var psi = new ProcessStartInfo(runtime) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in globalArgs)
            psi.ArgumentList.Add(a);
        foreach (var a in new[] { "run", "--bundle", _bundle, id })
            psi.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(psi)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(60_000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{runtime} did not finish within 60 s");
        }

        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    private static void SkipUnlessUsable(string runtime)
    {
        Skip.If(Which(runtime) is null, $"{runtime} is not installed (Debian package '{runtime}')");
        Skip.If(Environment.UserName != "root", $"{runtime} needs root to create containers");
        Skip.IfNot(File.Exists("/usr/bin/python3"), "needs the host's /usr/bin/python3 (Debian package python3)");
    }

    [SkippableFact]
    public void RuncRunsShellAndPythonUnderTheDefaultSpec()
    {
        SkipUnlessUsable("runc");
        WriteBundle(SmokeSpec());
        var (code, stdout, stderr) = Run("runc");
        Assert.True(code == 0, $"runc exited {code}\nstdout: {stdout}\nstderr: {stderr}");
        Assert.Equal("uid 1000 sub 8", stdout.Trim());
    }

    [SkippableFact]
    public void RuncSeccompBlocksMount()
    {
        SkipUnlessUsable("runc");
        WriteBundle(Specs.Generate(
            WithProcessArgs("/usr/bin/python3", "-I", "-c",
                "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n" +
                "r = libc.unshare(0x00020000)\nprint(r, os.strerror(ctypes.get_errno()))"),
            WithBindMount("/usr", "/usr", readOnly: true),
            WithRlimitsCappedToCurrentProcess()));
        var (code, stdout, stderr) = Run("runc");
        Assert.True(code == 0, $"runc exited {code}\nstdout: {stdout}\nstderr: {stderr}");
        Assert.Equal("-1 Operation not permitted", stdout.Trim());
    }

    [SkippableFact]
    public void GvisorRunsShellAndPythonUnderTheDefaultSpec()
    {
        SkipUnlessUsable("runsc");
        // runsc ignores errnoRet, so clone3 must be allowed for glibc to start threads.
        WriteBundle(SmokeSpec(WithDefaultSeccomp(allowClone3: true)));
        var root = Path.Combine(_bundle, "runsc-root");
        // The spec asks for a fresh network namespace and no CNI is wired here: no network at all.
        // --oci-seccomp makes gVisor enforce the spec's profile, which it skips by default.
        var (code, stdout, stderr) = Run("runsc", "--root", root, "--network=none", "--oci-seccomp");
        Assert.True(code == 0, $"runsc exited {code}\nstdout: {stdout}\nstderr: {stderr}");
        Assert.Equal("uid 1000 sub 8", stdout.Trim());
    }
}
