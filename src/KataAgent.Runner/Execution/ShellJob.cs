using System.Text;
using KataAgent.Runner.Native;
using KataAgent.Runner.Processes;
using KataAgent.Runner.Transport;

namespace KataAgent.Runner.Execution;

/// <summary>One batch step: `/bin/sh -c COMMAND` with its output streamed to the agent.</summary>
internal sealed class ShellJob : IRunControl
{
    private readonly ChildProcess _process;
    private readonly PipePump _pump;
    private readonly Lock _stdinGate = new();
    private bool _stdinClosed;

    private ShellJob(ChildProcess process, AgentLink link)
    {
        _process = process;
        _pump = new PipePump($"shell-{process.Pid}", [process.StdoutFd, process.StderrFd],
            (index, data) => link.SendRunOutput(index == 0 ? "stdout" : "stderr", data.ToArray()), process.Exited);
    }

    public static ShellJob Start(string command, RunnerConfig config, AgentLink link) =>
        new(ProcessSpawner.Start(new ProcessStartSpec
        {
            Executable = "/bin/sh",
            Arguments = ["/bin/sh", "-c", command],
            Environment = config.ChildEnvironment,
            WorkingDirectory = Directory.Exists(config.WorkDir) ? config.WorkDir : null,
            RedirectStdin = true,
        }), link);

    /// <summary>Exit code once the command has exited and its output has been queued.</summary>
    public async Task<int> WaitAsync()
    {
        await _pump.Finished;
        int exitCode = await _process.Exited;
        CloseStdin();
        return exitCode;
    }

    public void SendInput(string text)
    {
        lock (_stdinGate)
        {
            if (!_stdinClosed)
            {
                _ = FdWriter.WriteAll(_process.StdinFd, Encoding.UTF8.GetBytes(text + "\n"));
            }
        }
    }

    public void Interrupt() => _process.SignalGroup(Libc.SIGINT);

    public Task TerminateAsync(TimeSpan grace) => _process.TerminateAsync(grace);

    private void CloseStdin()
    {
        lock (_stdinGate)
        {
            if (!_stdinClosed)
            {
                _stdinClosed = true;
                _ = Libc.close(_process.StdinFd);
            }
        }
    }
}
