namespace KataAgent.Oci;

/// <summary>
/// The agent's own default seccomp allowlist. Written for this project in the spirit of
/// Docker's default profile: deny by default with EPERM, allow what ordinary programs
/// (a shell, CPython, its C extensions, gVisor's sandboxed applications) use, and open the
/// privileged syscalls only when the container holds the capability they need anyway.
/// </summary>
public static class SeccompProfiles
{
    public static IReadOnlyList<string> Architectures { get; } = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

    private const uint ENOSYS = 38;

    // Every CLONE_NEW* flag (ns, cgroup, uts, ipc, user, pid, net, time). clone() is allowed
    // only with all of these clear unless the container has CAP_SYS_ADMIN.
    private const ulong CloneNamespaceFlags = 0x7E020080;

    // personality(2): PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26 and the query value.
    // Anything else (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...) would weaken the process's hardening.
    private static readonly ulong[] PersonalityValues = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

    /// <summary>Syscalls allowed to every container, grouped by what they are for.</summary>
    public static IReadOnlyList<string> AlwaysAllowed { get; } =
    [
        // file descriptors and data
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
        "lseek", "_llseek", "open", "openat", "openat2", "creat", "close", "close_range",
        "dup", "dup2", "dup3", "fcntl", "fcntl64", "flock", "fsync", "fdatasync", "sync", "syncfs",
        "sync_file_range", "truncate", "truncate64", "ftruncate", "ftruncate64", "fallocate",
        "fadvise64", "fadvise64_64", "arm_fadvise64_64", "readahead", "sendfile", "sendfile64",
        "splice", "tee", "vmsplice", "copy_file_range", "ioctl",
        "io_setup", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_submit", "io_cancel",
        "pipe", "pipe2", "memfd_create",
        // file metadata and directories
        "stat", "stat64", "fstat", "fstat64", "lstat", "lstat64", "newfstatat", "fstatat64", "statx",
        "statfs", "statfs64", "fstatfs", "fstatfs64", "access", "faccessat", "faccessat2",
        "readlink", "readlinkat", "getdents", "getdents64", "getcwd", "chdir", "fchdir",
        "mkdir", "mkdirat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat",
        "symlink", "symlinkat", "unlink", "unlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2",
        "chown", "chown32", "fchown", "fchown32", "lchown", "lchown32", "fchownat", "umask",
        "utime", "utimes", "utimensat", "utimensat_time64", "futimesat", "mknod", "mknodat",
        "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr",
        "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
        "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
        // memory
        "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
        "mlock", "mlock2", "munlock", "mlockall", "munlockall", "remap_file_pages", "membarrier",
        "get_mempolicy", "pkey_alloc", "pkey_free", "pkey_mprotect", "map_shadow_stack",
        // processes, threads, signals
        "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "waitpid",
        "kill", "tkill", "tgkill", "pidfd_open", "pidfd_send_signal",
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
        "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
        "sigaction", "signal", "sigprocmask", "sigpending", "sigsuspend", "sigreturn", "sigaltstack",
        "signalfd", "signalfd4", "pause", "restart_syscall",
        "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid",
        "getuid", "getuid32", "geteuid", "geteuid32", "getgid", "getgid32", "getegid", "getegid32",
        "setuid", "setuid32", "setgid", "setgid32", "setreuid", "setreuid32", "setregid", "setregid32",
        "setresuid", "setresuid32", "setresgid", "setresgid32", "getresuid", "getresuid32",
        "getresgid", "getresgid32", "setfsuid", "setfsuid32", "setfsgid", "setfsgid32",
        "getgroups", "getgroups32", "setgroups", "setgroups32", "capget", "capset",
        "prctl", "arch_prctl", "set_tid_address", "set_robust_list", "get_robust_list",
        "futex", "futex_time64", "futex_waitv", "rseq", "seccomp",
        "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
        "modify_ldt", "set_thread_area", "get_thread_area",
        // scheduling and limits
        "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_setparam",
        "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
        "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_getattr", "sched_setattr",
        "getpriority", "setpriority", "ioprio_get", "ioprio_set", "getcpu",
        "getrlimit", "ugetrlimit", "setrlimit", "prlimit64", "getrusage", "times",
        "uname", "olduname", "sysinfo", "getrandom",
        // time and timers
        "clock_gettime", "clock_gettime64", "clock_getres", "clock_getres_time64",
        "clock_nanosleep", "clock_nanosleep_time64", "gettimeofday", "time", "nanosleep", "alarm",
        "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun",
        "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
        "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64",
        // waiting for events
        "select", "_newselect", "pselect6", "pselect6_time64", "poll", "ppoll", "ppoll_time64",
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_wait", "epoll_wait_old",
        "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
        // sockets
        "socket", "socketpair", "socketcall", "bind", "listen", "accept", "accept4", "connect",
        "getsockname", "getpeername", "getsockopt", "setsockopt", "sendto", "recvfrom",
        "send", "recv", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "recvmmsg_time64", "shutdown",
        // System V and POSIX IPC (stay inside the container's ipc namespace)
        "ipc", "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semtimedop_time64",
        "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_notify",
        "mq_getsetattr", "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive", "mq_timedreceive_time64",
    ];

    /// <summary>Syscalls opened only when the container's bounding set holds the capability.</summary>
    public static IReadOnlyDictionary<string, IReadOnlyList<string>> ByCapability { get; } =
        new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal)
        {
            ["CAP_SYS_ADMIN"] =
            [
                "mount", "umount", "umount2", "unshare", "setns", "pivot_root", "sethostname", "setdomainname",
                "quotactl", "quotactl_fd", "fanotify_init", "name_to_handle_at", "open_tree", "move_mount",
                "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "lookup_dcookie",
                "bpf", "perf_event_open", "syslog",
            ],
            ["CAP_SYS_CHROOT"] = ["chroot"],
            ["CAP_SYS_NICE"] = ["mbind", "set_mempolicy", "set_mempolicy_home_node", "migrate_pages", "move_pages"],
            // Reading or steering another process (the runner is PID 1 and holds the session's keys): as in Docker's
            // profile, only for a container that was given CAP_SYS_PTRACE (debuggers, py-spy).
            ["CAP_SYS_PTRACE"] = ["kcmp", "pidfd_getfd", "process_madvise", "ptrace", "process_vm_readv", "process_vm_writev"],
            ["CAP_SYS_TIME"] = ["settimeofday", "stime", "clock_settime", "clock_settime64", "adjtimex", "clock_adjtime", "clock_adjtime64"],
            ["CAP_SYS_BOOT"] = ["reboot"],
            ["CAP_SYS_MODULE"] = ["init_module", "finit_module", "delete_module"],
            ["CAP_SYS_RAWIO"] = ["iopl", "ioperm"],
            ["CAP_SYS_PACCT"] = ["acct"],
            ["CAP_SYSLOG"] = ["syslog"],
            ["CAP_BPF"] = ["bpf"],
            ["CAP_PERFMON"] = ["perf_event_open"],
        };

    /// <summary>
    /// The default profile for a container whose bounding set is <paramref name="capabilities"/>.
    /// clone3 fails with ENOSYS unless <paramref name="allowClone3"/>: set that for a runtime
    /// that ignores errnoRet (gVisor's --oci-seccomp as of release 20221219 turns it into EPERM,
    /// which stops glibc creating threads); there the sandbox kernel is the boundary anyway.
    /// </summary>
    public static LinuxSeccomp Default(IEnumerable<string>? capabilities = null, bool allowClone3 = false)
    {
        var caps = new HashSet<string>(capabilities ?? SpecDefaults.Capabilities, StringComparer.Ordinal);
        var allowed = new List<string>(AlwaysAllowed);
        foreach (var (cap, names) in ByCapability)
        {
            if (caps.Contains(cap))
                allowed.AddRange(names);
        }

        var rules = new List<LinuxSyscall>
        {
            new() { Names = allowed.Distinct(StringComparer.Ordinal).ToList(), Action = SeccompActions.Allow },
            // glibc >= 2.34 tries clone3 first and falls back to clone only on ENOSYS, and clone3's
            // flags live in memory where seccomp cannot inspect them: so clone3 "does not exist".
            allowClone3
                ? new() { Names = ["clone3"], Action = SeccompActions.Allow }
                : new() { Names = ["clone3"], Action = SeccompActions.Errno, ErrnoRet = ENOSYS },
        };

        if (caps.Contains("CAP_SYS_ADMIN"))
        {
            rules.Add(new() { Names = ["clone"], Action = SeccompActions.Allow });
        }
        else
        {
            rules.Add(new()
            {
                Names = ["clone"],
                Action = SeccompActions.Allow,
                Args = [new() { Index = 0, Value = CloneNamespaceFlags, ValueTwo = 0, Op = "SCMP_CMP_MASKED_EQ" }],
            });
        }

        // One rule per value: libseccomp ANDs the args of a single rule.
        foreach (var value in PersonalityValues)
        {
            rules.Add(new()
            {
                Names = ["personality"],
                Action = SeccompActions.Allow,
                Args = [new() { Index = 0, Value = value, Op = "SCMP_CMP_EQ" }],
            });
        }

        return new LinuxSeccomp
        {
            DefaultAction = SeccompActions.Errno,
            Architectures = [.. Architectures],
            Syscalls = rules,
        };
    }
}
