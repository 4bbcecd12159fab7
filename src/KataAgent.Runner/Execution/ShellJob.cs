using System.Text;
using KataAgent.Runner.Native;
using KataAgent.Runner.Processes;
using KataAgent.Runner.Transport;

namespace KataAgent.Runner.Execution;

/// <summary>
/// One batch step: `/bin/sh -c COMMAND` with its output streamed to the agent and copied to the task log.
/// An exec step runs in Backend.AI's batch mode: _BACKEND_BATCH_MODE=1, and Python's input() reads answers
/// through <see cref="UserInputServer"/>; other programs still get `input` text on their stdin.
/// </summary>
internal sealed class ShellJob : IRunControl
{
    public const string BatchSiteDirName = "batch-site";
    public const string InputSocketVariable = "KATA_USER_INPUT_SOCKET";

    private readonly ChildProcess _process;
    private readonly PipePump _pump;
    private readonly TaskLog? _taskLog;
    private readonly UserInputServer? _inputServer;
    private readonly Lock _stdinGate = new();
    private bool _stdinClosed;

    private ShellJob(ChildProcess process, AgentLink link, TaskLog? taskLog, UserInputServer? inputServer)
    {
        _process = process;
        _taskLog = taskLog;
        _inputServer = inputServer;
        _pump = new PipePump($"shell-{process.Pid}", [process.StdoutFd, process.StderrFd],
            (index, data) =>
            {
                link.SendRunOutput(index == 0 ? "stdout" : "stderr", data.ToArray());
                _taskLog?.Write(data);
            }, process.Exited);
    }

    /// <summary>Dir of our sitecustomize.py (ships next to the runner); on PYTHONPATH of batch-mode children.</summary>
    public static string BatchSiteDir => Path.Combine(AppContext.BaseDirectory, BatchSiteDirName);

    /// <param name="inputServer">Non-null for batch mode (the exec step).</param>
    public static ShellJob Start(string command, RunnerConfig config, AgentLink link, UserInputServer? inputServer)
    {
        IReadOnlyDictionary<string, string> environment = config.ChildEnvironment;
        if (inputServer is not null)
        {
            var batch = new Dictionary<string, string>(environment, StringComparer.Ordinal)
            {
                ["_BACKEND_BATCH_MODE"] = "1",
                [InputSocketVariable] = config.UserInputSocket,
            };
            if (File.Exists(Path.Combine(BatchSiteDir, "sitecustomize.py")))
            {
                batch["PYTHONPATH"] = RunnerConfig.PromotePath(batch.GetValueOrDefault("PYTHONPATH", ""), BatchSiteDir);
            }
            environment = batch;
        }
        TaskLog? taskLog = TaskLog.TryOpen(config);
        try
        {
            inputServer?.Open();
            return new(ProcessSpawner.Start(new ProcessStartSpec
            {
                Executable = "/bin/sh",
                Arguments = ["/bin/sh", "-c", command],
                Environment = environment,
                WorkingDirectory = Directory.Exists(config.WorkDir) ? config.WorkDir : null,
                RedirectStdin = true,
            }), link, taskLog, inputServer);
        }
        catch
        {
            inputServer?.Close();
            taskLog?.Dispose();
            throw;
        }
    }

    /// <summary>Exit code once the command has exited and its output has been queued.</summary>
    public async Task<int> WaitAsync()
    {
        await _pump.Finished;
        int exitCode = await _process.Exited;
        CloseStdin();
        _inputServer?.Close();
        _taskLog?.Dispose();
        return exitCode;
    }

    public void SendInput(string text)
    {
        if (_inputServer?.TryAnswer(text) == true)
        {
            return;
        }
        lock (_stdinGate)
        {
            if (!_stdinClosed)
            {
                _ = FdWriter.WriteAll(_process.StdinFd, Encoding.UTF8.GetBytes(text + "\n"));
            }
        }
    }

    public void Interrupt() => _process.SignalGroup(Libc.SIGINT);

    /// <summary>Terminates the command, then waits (at most <paramref name="outputWait"/>) until what it wrote is queued for the agent.</summary>
    public async Task TerminateAsync(TimeSpan grace, TimeSpan outputWait)
    {
        await _process.TerminateAsync(grace);
        await Task.WhenAny(_pump.Finished, Task.Delay(outputWait));
    }

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
