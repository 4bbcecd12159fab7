using System.Threading.Channels;
using KataAgent.Runner.Processes;
using KataAgent.Runner.Transport;

namespace KataAgent.Runner.Execution;

/// <summary>
/// Runs `code`, `clean`, `build` and `exec` one after the other, in arrival order (the agent sends
/// a batch's three steps at once). Each answers with its own end message: finished, clean-finished,
/// build-finished. An exec that follows a failed build is skipped and finishes with exit code 127 (as
/// Backend.AI's runner does). Start-up work (the Python user site lookup, the bootstrap script) comes first.
/// </summary>
internal sealed partial class RunWorker
{
    private readonly RunnerConfig _config;
    private readonly AgentLink _link;
    private readonly PythonInterpreter? _interpreter;
    private readonly Channel<AgentMessage> _queue = Channel.CreateUnbounded<AgentMessage>(new UnboundedChannelOptions { SingleReader = true });
    private volatile IRunControl? _current;
    private volatile bool _bootstrapping = true;
    private int _queued;
    private int _outstanding;
    private int _endSent;
    private int? _failedBuildExitCode;
    private ShellJob? _currentShell;
    private readonly UserInputServer _inputServer;
    private readonly TaskCompletionSource<double> _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    // Pooled runners only: the tenant's environment arrived / its bootstrap has run.
    private readonly TaskCompletionSource _tenantArrived = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _personalised = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _personaliseRequests;
    private IReadOnlyList<(string Key, string Value)> _tenantEnvironment = [];

    public RunWorker(RunnerConfig config, AgentLink link, PythonInterpreter? interpreter, UserInputServer inputServer)
    {
        _config = config;
        _link = link;
        _interpreter = interpreter;
        _inputServer = inputServer;
        _link.RunEnding += OnRunEnding;
    }

    /// <summary>Completes with the Unix time (seconds) at which start-up work finished.</summary>
    public Task<double> Started => _started.Task;

    public IRunControl? Current => _current;

    public bool IsBootstrapping => _bootstrapping;

    public int QueuedRuns => Volatile.Read(ref _queued);

    /// <summary>A run is waiting or running and its end message has not been queued yet.</summary>
    public bool IsBusy => Volatile.Read(ref _outstanding) > 0;

    public void Enqueue(AgentMessage message)
    {
        Interlocked.Increment(ref _outstanding);
        Interlocked.Increment(ref _queued);
        _ = _queue.Writer.TryWrite(message);
    }

    public async Task RunAsync(CancellationToken stopping)
    {
        if (_config.HasInterpreter)
        {
            await FindPythonUserSiteAsync(stopping);
        }
        if (_config.Pooled)
        {
            // Warm: answer status now and start the interpreter for no one yet (its start-up is most of a claimed
            // session's first run otherwise); hold the bootstrap for the tenant.
            _bootstrapping = false;
            _started.TrySetResult(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0);
            TryStartInterpreter();
            try
            {
                await _tenantArrived.Task.WaitAsync(stopping);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            bool bootstrapped = await RunBootstrapAsync(stopping);
            await HandInterpreterToTenantAsync(bootstrapped);
            _personalised.TrySetResult();
        }
        else
        {
            await RunBootstrapAsync(stopping);
            _bootstrapping = false;
            _started.TrySetResult(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0);
        }
        TryStartInterpreter();
        try
        {
            await foreach (AgentMessage message in _queue.Reader.ReadAllAsync(stopping))
            {
                Volatile.Write(ref _endSent, 0);
                Interlocked.Decrement(ref _queued);
                _link.Journal?.StartNext();
                try
                {
                    if (message.Type == "code")
                    {
                        await RunQueryAsync(message.PayloadText);
                    }
                    else
                    {
                        await RunBatchStepAsync(message.Type, message.PayloadText);
                    }
                }
                catch (Exception exception) when (exception is not OperationCanceledException)
                {
                    Log.Error($"{message.Type} failed: {exception}");
                }
                finally
                {
                    _current = null;
                    MarkEnded(); // a step that failed before its end message
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void TryStartInterpreter()
    {
        if (_interpreter is null)
        {
            return;
        }
        try
        {
            _interpreter.EnsureStarted();
        }
        catch (IOException exception)
        {
            Log.Error($"query mode is unavailable: {exception.Message}");
        }
    }

    /// <summary>
    /// The interpreter a pool member started before its tenant came: it takes the tenant's environment into
    /// os.environ, unless what it would need is read only at start-up (a bootstrap script that may have installed
    /// packages, PYTHON*, locale or loader variables) — then it goes and the first run starts a fresh one.
    /// </summary>
    private async Task HandInterpreterToTenantAsync(bool bootstrapped)
    {
        if (_interpreter is null)
        {
            return;
        }
        bool startupSensitive = _tenantEnvironment.Any(e => e.Key.StartsWith("PYTHON", StringComparison.Ordinal)
            || e.Key.StartsWith("LC_", StringComparison.Ordinal) || e.Key.StartsWith("LD_", StringComparison.Ordinal)
            || e.Key is "LANG" or "LANGUAGE");
        if (bootstrapped || startupSensitive || !_interpreter.TryApplyEnvironment(_tenantEnvironment))
        {
            Log.Info("starting a fresh interpreter for the tenant");
            await _interpreter.DiscardAsync(TimeSpan.FromSeconds(2));
        }
    }

    /// <summary>Completes once a pooled runner has taken its tenant's environment and run the bootstrap script.</summary>
    public Task Personalised => _personalised.Task;

    /// <summary>
    /// A pooled runner takes one tenant, once: its environment applies to every process started from now on (the
    /// interpreter has not started yet). Returns why it refuses, or null when accepted.
    /// </summary>
    public string? TryPersonalise(IReadOnlyList<(string Key, string Value)> environ)
    {
        if (!_config.Pooled)
        {
            return "this runner is not a pool member (runner.json has no \"pooled\": true)";
        }
        if (Interlocked.Exchange(ref _personaliseRequests, 1) == 1)
        {
            return "already personalised: a pool member serves one tenant only";
        }
        _config.ApplyTenantEnvironment(environ);
        _tenantEnvironment = [.. environ];
        _tenantArrived.TrySetResult();
        return null;
    }

    private void OnRunEnding()
    {
        _current = null;
        MarkEnded();
    }

    private void MarkEnded()
    {
        if (Interlocked.Exchange(ref _endSent, 1) == 0)
        {
            Interlocked.Decrement(ref _outstanding);
        }
    }

    public async Task StopAsync(TimeSpan grace)
    {
        // The output a run wrote before the stop is still sent: the link closes only after this (its queue is then drained).
        // Bounded: a pump blocked on an agent that no longer reads must not hold the stop.
        TimeSpan outputWait = TimeSpan.FromSeconds(1);
        ShellJob? shell = _currentShell;
        if (shell is not null)
        {
            await shell.TerminateAsync(grace, outputWait);
        }
        if (_interpreter is not null)
        {
            await _interpreter.StopAsync(grace, outputWait);
        }
    }

    private async Task RunQueryAsync(string source)
    {
        _failedBuildExitCode = null;
        if (_interpreter is null)
        {
            _link.SendRunOutput("stderr", $"kata-runner: query mode is not available for runtime type '{_config.RuntimeType}'.\n");
            _link.SendRunOutput("finished", "{\"exitCode\": 127}");
            return;
        }
        try
        {
            _interpreter.EnsureStarted();
        }
        catch (IOException exception)
        {
            _link.SendRunOutput("stderr", $"kata-runner: cannot start the interpreter: {exception.Message}\n");
            _link.SendRunOutput("finished", "{\"exitCode\": 127}");
            return;
        }
        _current = _interpreter;
        await _interpreter.RunAsync(source);
    }

    private async Task RunBatchStepAsync(string step, string commandText)
    {
        string endType = step switch { "clean" => "clean-finished", "build" => "build-finished", _ => "finished" };
        if (step == "clean")
        {
            _failedBuildExitCode = null;
        }
        if (step == "exec" && _failedBuildExitCode is int buildExitCode)
        {
            _failedBuildExitCode = null;
            _link.SendRunOutput("stderr", $"kata-runner: exec skipped: the build failed with exit code {buildExitCode}.\n");
            _link.SendRunOutput(endType, $"{{\"exitCode\": {BatchHeuristics.NotFoundExitCode}}}");
            return;
        }
        string? command = commandText.Trim() == "*"
            ? BatchHeuristics.Resolve(step, _config.WorkDir, _config.RuntimePath)
            : commandText;
        int exitCode = 0;
        if (command == BatchHeuristics.MissingMain)
        {
            _link.SendRunOutput("stderr", "kata-runner: cannot find the main script (main.py) in the work dir.\n");
            exitCode = BatchHeuristics.NotFoundExitCode;
        }
        else if (!string.IsNullOrWhiteSpace(command))
        {
            exitCode = await RunShellAsync(command, batchMode: step == "exec");
        }
        if (step == "build")
        {
            _failedBuildExitCode = exitCode == 0 ? null : exitCode;
        }
        _link.SendRunOutput(endType, $"{{\"exitCode\": {exitCode}}}");
    }

    private async Task<int> RunShellAsync(string command, bool batchMode)
    {
        ShellJob job;
        try
        {
            job = ShellJob.Start(command, _config, _link, batchMode ? _inputServer : null);
        }
        catch (IOException exception)
        {
            _link.SendRunOutput("stderr", $"kata-runner: {exception.Message}\n");
            return 127;
        }
        _currentShell = job;
        _current = job;
        try
        {
            return await job.WaitAsync();
        }
        finally
        {
            _currentShell = null;
        }
    }

    /// <summary>
    /// Backend.AI puts the runtime's user site dir (site.USER_SITE, e.g. ~/.local/lib/python3.X/site-packages)
    /// first on PYTHONPATH of every child; it is asked once, from the interpreter itself.
    /// </summary>
    private async Task FindPythonUserSiteAsync(CancellationToken stopping)
    {
        if (_config.RuntimePath.Contains('/', StringComparison.Ordinal) && !File.Exists(_config.RuntimePath))
        {
            return;
        }
        if (UserSiteFromInterpreterName() is { } known)
        {
            _config.PromotePythonUserSite(known);
            Log.Info($"Python user site dir {known} is first on PYTHONPATH (from the interpreter's name)");
            return;
        }
        try
        {
            ChildProcess process = ProcessSpawner.Start(new ProcessStartSpec
            {
                Executable = _config.RuntimePath,
                Arguments = [_config.RuntimePath, "-c", "import site; print(site.USER_SITE)"],
                Environment = _config.ChildEnvironment,
                WorkingDirectory = Directory.Exists(_config.WorkDir) ? _config.WorkDir : null,
            });
            var stdout = new MemoryStream();
            var pump = new PipePump("user-site", [process.StdoutFd, process.StderrFd], (index, data) =>
            {
                if (index == 0 && stdout.Length < 64 * 1024)
                {
                    stdout.Write(data);
                }
            }, process.Exited);
            Task finished = Task.WhenAll(pump.Finished, process.Exited);
            if (await Task.WhenAny(finished, Task.Delay(TimeSpan.FromSeconds(60), stopping)) != finished)
            {
                Log.Warn("the Python user site lookup did not finish within 60 s; PYTHONPATH stays as it is");
                await process.TerminateAsync(TimeSpan.FromSeconds(2));
                return;
            }
            string userSite = System.Text.Encoding.UTF8.GetString(stdout.ToArray()).Trim();
            if (await process.Exited == 0 && Path.IsPathRooted(userSite) && !userSite.Contains(':', StringComparison.Ordinal))
            {
                _config.PromotePythonUserSite(userSite);
                Log.Info($"Python user site dir {userSite} is first on PYTHONPATH");
            }
        }
        catch (IOException exception)
        {
            Log.Warn($"cannot ask the Python interpreter for its user site dir: {exception.Message}");
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>
    /// site.USER_SITE without starting Python (a second or more of a sandbox's start-up on gVisor): when the
    /// interpreter resolves to a file named pythonX.Y and no PYTHONUSERBASE moves it, it is
    /// $HOME/.local/lib/pythonX.Y/site-packages. Null when that cannot be told for sure: Python is asked then.
    /// </summary>
    private string? UserSiteFromInterpreterName()
    {
        if (!_config.RuntimePath.StartsWith('/') || _config.ChildEnvironment.ContainsKey("PYTHONUSERBASE")
            || _config.ChildEnvironment.GetValueOrDefault("HOME") is not { Length: > 1 } home || !home.StartsWith('/'))
        {
            return null;
        }
        try
        {
            string name = Path.GetFileName(File.ResolveLinkTarget(_config.RuntimePath, returnFinalTarget: true)?.FullName ?? _config.RuntimePath);
            return PythonVersionedName().IsMatch(name) ? Path.Combine(home, ".local", "lib", name, "site-packages") : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^python[0-9]+\.[0-9]+$")]
    private static partial System.Text.RegularExpressions.Regex PythonVersionedName();

    /// <summary>Runs the bootstrap script if there is one; true when there was.</summary>
    private async Task<bool> RunBootstrapAsync(CancellationToken stopping)
    {
        string? script = _config.BootstrapScript;
        if (script is null || !File.Exists(script))
        {
            return false;
        }
        Log.Info($"running bootstrap script {script}");
        try
        {
            ChildProcess process = ProcessSpawner.Start(new ProcessStartSpec
            {
                Executable = "/bin/sh",
                Arguments = ["/bin/sh", script],
                Environment = _config.ChildEnvironment,
                WorkingDirectory = Directory.Exists(_config.WorkDir) ? _config.WorkDir : null,
            });
            // Its output belongs in the runner's log, not in any run.
            var pump = new PipePump("bootstrap", [process.StdoutFd, process.StderrFd],
                (_, data) => Log.Info($"bootstrap: {System.Text.Encoding.UTF8.GetString(data).TrimEnd()}"), process.Exited);
            Task finished = Task.WhenAll(pump.Finished, process.Exited);
            if (await Task.WhenAny(finished, Task.Delay(_config.BootstrapTimeout, stopping)) != finished)
            {
                Log.Error($"bootstrap script did not finish within {_config.BootstrapTimeout}; stopping it");
                await process.TerminateAsync(TimeSpan.FromSeconds(5));
                return true;
            }
            int exitCode = await process.Exited;
            if (exitCode != 0)
            {
                Log.Error($"bootstrap script exited with code {exitCode}");
            }
        }
        catch (IOException exception)
        {
            Log.Error($"cannot run bootstrap script: {exception.Message}");
        }
        catch (OperationCanceledException)
        {
        }
        return true;
    }
}
