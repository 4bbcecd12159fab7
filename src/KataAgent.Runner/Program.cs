using System.Runtime.InteropServices;
using KataAgent.Runner;
using KataAgent.Runner.Native;
using KataAgent.Runner.Transport;

// kata-runner: the process inside a session that runs code for the agent (see README.md).
// Exit codes: 0 stopped by SIGTERM/SIGINT, 2 bad config or arguments, 3 cannot bind its ports.

string? configDirArgument = null;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--config-dir" when i + 1 < args.Length:
            configDirArgument = args[++i];
            break;
        case "--verbose":
            Log.Verbose = true;
            break;
        case "--version":
            Console.WriteLine($"kata-runner {typeof(RunnerConfig).Assembly.GetName().Version}");
            return 0;
        default:
            await Console.Error.WriteLineAsync($"kata-runner: unknown argument '{args[i]}'. Usage: kata-runner [--config-dir DIR] [--verbose]");
            return 2;
    }
}

string configDir = configDirArgument
    ?? Environment.GetEnvironmentVariable(RunnerConfig.ConfigDirEnvironmentVariable)
    ?? RunnerConfig.DefaultConfigDir;
Log.Info($"starting (pid {Libc.getpid()}, glibc {Libc.LibcVersion()}, config dir {configDir})");

RunnerConfig config;
try
{
    config = RunnerConfig.Load(configDir);
}
catch (Exception exception) when (exception is InvalidDataException or IOException or UnauthorizedAccessException)
{
    Log.Error($"cannot run: {exception.Message}");
    return 2;
}

if (config.CurveSecretKey is not null)
{
    CurveWarmUp.Start();
}
// Socket completions run on the epoll thread instead of hopping through a thread-pool worker: inside
// gVisor every hop between threads is a costly wake-up, and a ZeroMQ handshake makes a dozen of them.
// Set after the config snapshot of our environment, so the user's processes never inherit it.
Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");

// Orphans of the processes we start are re-parented to us (PID 1 is anyway) and reaped by ChildReaper.
_ = Libc.prctl(Libc.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

if (!DropPrivileges(config))
{
    return 2;
}

using var stopping = new CancellationTokenSource();
// PID 1 gets no default signal handling: without these the container would ignore `stop`.
using PosixSignalRegistration onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => { context.Cancel = true; stopping.Cancel(); });
using PosixSignalRegistration onInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, context => { context.Cancel = true; stopping.Cancel(); });

AgentLink link;
try
{
    // Disposed explicitly below, before the session: that order is the shutdown sequence. On an exception the process ends.
#pragma warning disable CA2000
    link = new AgentLink(config.BindHost, config.InboundPort, config.OutboundPort, config.CurveSecretKey, stopping.Token,
        config.SequencedOutput ? new RunJournal(config.ReplayBufferBytes) : null);
#pragma warning restore CA2000
}
catch (Exception exception) when (exception is NetMQ.NetMQException or System.Net.Sockets.SocketException)
{
    Log.Error($"cannot run: cannot bind tcp://{config.BindHost}:{config.InboundPort} and :{config.OutboundPort}: {exception.Message}");
    return 3;
}

using var session = new RunnerSession(config, link, stopping.Token);
link.Start(session.Handle);
Log.Info($"serving: PULL tcp://{config.BindHost}:{config.InboundPort}, PUSH tcp://{config.BindHost}:{config.OutboundPort}, "
    + $"{(config.CurveSecretKey is null ? "no authentication (NULL mechanism: no " + RunnerConfig.CurveKeyFile + ")" : "CURVE")}, runtime {config.RuntimeType} ({config.RuntimePath})");
Task running = session.RunAsync();

try
{
    await Task.Delay(Timeout.Infinite, stopping.Token);
}
catch (OperationCanceledException)
{
}

Log.Info("stopping: terminating child processes");
await session.StopAsync(TimeSpan.FromSeconds(5));
if (Libc.getpid() == 1)
{
    // As the container's init, also stop whatever the children left behind (kill(-1) spares PID 1).
    _ = Libc.kill(-1, Libc.SIGTERM);
    await WaitUntilAloneAsync(TimeSpan.FromSeconds(1));
    _ = Libc.kill(-1, Libc.SIGKILL);
}
await Task.WhenAny(running, Task.Delay(TimeSpan.FromSeconds(2)));
link.Dispose();
Log.Info("stopped");
return 0;

// As PID 1: returns once no other process is left in the container (kill(-1, 0) finds none: the reaper has
// collected them all), or after the timeout. A destroy waits on this, so a fixed sleep would cost every session.
static async Task WaitUntilAloneAsync(TimeSpan timeout)
{
    long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
    while (Libc.kill(-1, 0) == 0 && Environment.TickCount64 < deadline)
    {
        await Task.Delay(5);
    }
}

static bool DropPrivileges(RunnerConfig config)
{
    if (config.Gid is int gid && gid != Libc.getgid())
    {
        unsafe
        {
            int* groups = stackalloc int[1];
            groups[0] = gid;
            if (Libc.setgroups(1, groups) != 0 || Libc.setgid(gid) != 0)
            {
                Log.Error($"cannot run: cannot switch to gid {gid}: {Libc.ErrorText(Marshal.GetLastPInvokeError())}");
                return false;
            }
        }
    }
    if (config.Uid is int uid && uid != Libc.getuid())
    {
        if (Libc.setuid(uid) != 0)
        {
            Log.Error($"cannot run: cannot switch to uid {uid}: {Libc.ErrorText(Marshal.GetLastPInvokeError())}");
            return false;
        }
    }
    if (config.Uid is not null || config.Gid is not null)
    {
        Log.Info($"running as uid {Libc.getuid()}, gid {Libc.getgid()}");
    }
    return true;
}
