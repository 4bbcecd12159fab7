using static KataAgent.Oci.SpecOpts;

namespace KataAgent.Oci.Tests;

public class SeccompTests
{
    private static HashSet<string> Allowed(LinuxSeccomp profile) =>
        profile.Syscalls!.Where(r => r.Action == SeccompActions.Allow && (r.Args is null || r.Args.Count == 0))
            .SelectMany(r => r.Names).ToHashSet(StringComparer.Ordinal);

    [Fact]
    public void DefaultProfileShape()
    {
        var seccomp = Specs.Generate(WithProcessArgs("/bin/sh")).Linux!.Seccomp!;
        Assert.Equal("SCMP_ACT_ERRNO", seccomp.DefaultAction);
        Assert.Equal(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], seccomp.Architectures);
        Assert.True(Allowed(seccomp).Count > 300, "expected a large allowlist");
    }

    // What a shell, CPython (threads, asyncio, subprocess, os.urandom) and a ZeroMQ runner call.
    [Theory]
    [InlineData("read")] [InlineData("write")] [InlineData("openat")] [InlineData("close")] [InlineData("newfstatat")]
    [InlineData("statx")] [InlineData("execve")] [InlineData("wait4")] [InlineData("pipe2")] [InlineData("dup2")]
    [InlineData("mmap")] [InlineData("mprotect")] [InlineData("brk")] [InlineData("futex")] [InlineData("rt_sigaction")]
    [InlineData("epoll_wait")] [InlineData("epoll_pwait")] [InlineData("getrandom")] [InlineData("prlimit64")] [InlineData("sched_getaffinity")]
    [InlineData("socket")] [InlineData("connect")] [InlineData("accept4")] [InlineData("sendmsg")] [InlineData("eventfd2")]
    [InlineData("vfork")] [InlineData("set_robust_list")] [InlineData("rseq")] [InlineData("getdents64")] [InlineData("faccessat2")]
    [InlineData("ioctl")] [InlineData("fcntl")] [InlineData("clock_gettime")] [InlineData("arch_prctl")] [InlineData("chroot")]
    public void CommonSyscallsAreAllowed(string name)
    {
        Assert.Contains(name, Allowed(SeccompProfiles.Default()));
    }

    [Theory]
    [InlineData("mount")] [InlineData("umount2")] [InlineData("unshare")] [InlineData("setns")] [InlineData("bpf")]
    [InlineData("init_module")] [InlineData("reboot")] [InlineData("kexec_load")] [InlineData("open_by_handle_at")]
    [InlineData("clock_settime")] [InlineData("keyctl")] [InlineData("add_key")] [InlineData("userfaultfd")] [InlineData("io_uring_setup")]
    public void PrivilegedSyscallsAreNotAllowedByDefault(string name)
    {
        var profile = SeccompProfiles.Default();
        Assert.DoesNotContain(profile.Syscalls!, r => r.Action == SeccompActions.Allow && r.Names.Contains(name));
    }

    // Reading or steering another process (the session's runner is PID 1): only with CAP_SYS_PTRACE, as in Docker's profile.
    [Theory]
    [InlineData("ptrace")] [InlineData("process_vm_readv")] [InlineData("process_vm_writev")]
    public void ProcessInspectionNeedsSysPtrace(string name)
    {
        Assert.DoesNotContain(name, Allowed(SeccompProfiles.Default()));
        Assert.DoesNotContain(name, Allowed(SeccompProfiles.Default(SpecDefaults.Capabilities)));
        Assert.Contains(name, Allowed(SeccompProfiles.Default([.. SpecDefaults.Capabilities, "CAP_SYS_PTRACE"])));
        // The finished spec matches the final capability set.
        Assert.Contains(name, Allowed(Specs.Generate(WithProcessArgs("/bin/sh"), WithAddedCapabilities("CAP_SYS_PTRACE")).Linux!.Seccomp!));
    }

    [Fact]
    public void CloneIsAllowedOnlyWithoutNamespaceFlags()
    {
        var clone = Assert.Single(SeccompProfiles.Default().Syscalls!, r => r.Names.Contains("clone"));
        var arg = Assert.Single(clone.Args!);
        Assert.Equal(("SCMP_CMP_MASKED_EQ", 0u, 0UL), (arg.Op, arg.Index, arg.ValueTwo!.Value));
        const ulong newNet = 0x40000000, newUser = 0x10000000, newTime = 0x80;
        Assert.Equal(newNet | newUser | newTime, arg.Value & (newNet | newUser | newTime));
    }

    [Fact]
    public void Clone3FailsWithEnosysSoLibcFallsBackToClone()
    {
        var rule = Assert.Single(SeccompProfiles.Default().Syscalls!, r => r.Names.Contains("clone3"));
        Assert.Equal((SeccompActions.Errno, 38u), (rule.Action, rule.ErrnoRet!.Value));
    }

    [Fact]
    public void ProfileFollowsFinalCapabilitiesWhateverTheOptionOrder()
    {
        var spec = Specs.Generate(WithProcessArgs("/bin/sh"), WithDefaultSeccomp(), WithAddedCapabilities("CAP_SYS_ADMIN"), WithDroppedCapabilities("CAP_SYS_CHROOT"));
        var allowed = Allowed(spec.Linux!.Seccomp!);
        Assert.Contains("mount", allowed);
        Assert.Contains("clone", allowed); // unfiltered with CAP_SYS_ADMIN
        Assert.DoesNotContain("chroot", allowed);
    }

    [Fact]
    public void CustomProfileIsKeptAsGiven()
    {
        var custom = new LinuxSeccomp { DefaultAction = SeccompActions.Allow, Syscalls = [new() { Names = ["ptrace"], Action = SeccompActions.Errno }] };
        var spec = Specs.Generate(WithProcessArgs("/bin/sh"), WithSeccomp(custom), WithAddedCapabilities("CAP_SYS_ADMIN"));
        Assert.Same(custom, spec.Linux!.Seccomp);
        RuntimeSpecSchema.AssertValid(Specs.ToJson(spec));
    }

    [Fact]
    public void WithoutSeccompLeavesItOutOfTheJson()
    {
        var json = Specs.ToJson(Specs.Generate(WithProcessArgs("/bin/sh"), WithoutSeccomp()));
        Assert.DoesNotContain("\"seccomp\"", json, StringComparison.Ordinal);
    }

    [Fact]
    public void BadCustomActionIsRejected()
    {
        var custom = new LinuxSeccomp { DefaultAction = "SCMP_ACT_MAYBE" };
        var ex = Assert.Throws<InvalidSpecException>(() => Specs.Generate(WithProcessArgs("/bin/sh"), WithSeccomp(custom)));
        Assert.Contains("defaultAction 'SCMP_ACT_MAYBE'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Clone3CanBeAllowedForRuntimesThatIgnoreErrnoRet()
    {
        var spec = Specs.Generate(WithProcessArgs("/bin/sh"), WithDefaultSeccomp(allowClone3: true), WithAddedCapabilities("CAP_SYS_NICE"));
        var rule = Assert.Single(spec.Linux!.Seccomp!.Syscalls!, r => r.Names.Contains("clone3"));
        Assert.Equal(SeccompActions.Allow, rule.Action);
        Assert.Null(rule.ErrnoRet);
        Assert.Contains("mbind", Allowed(spec.Linux.Seccomp)); // still rebuilt for the final caps
    }
}
