using System.Text;
using System.Text.Json;
using KataAgent.Runner.Native;
using KataAgent.Runner.Processes;
using KataAgent.Runner.Transport;

namespace KataAgent.Runner.Execution;

/// <summary>
/// Query mode: one long-lived Python process running kata_runner_driver.py, so that state survives
/// between runs. If it dies (os._exit, a crash) the run in progress finishes with its exit status
/// and the next run starts a fresh interpreter.
/// </summary>
internal sealed class PythonInterpreter : IRunControl
{
    public const string DriverFileName = "kata_runner_driver.py";
    // Bounds one stdout/stderr message when many small writes are merged.
    private const int MaxMergedMessageBytes = 1024 * 1024;

    private readonly RunnerConfig _config;
    private readonly AgentLink _link;
    private readonly Lock _gate = new();
    private ChildProcess? _process;
    private PipePump? _pump;
    private FrameReader? _frames;
    private TaskCompletionSource<int>? _currentRun;

    public PythonInterpreter(RunnerConfig config, AgentLink link)
    {
        _config = config;
        _link = link;
    }

    public static string DriverPath => Path.Combine(AppContext.BaseDirectory, DriverFileName);

    /// <summary>Starts the interpreter if it is not running. Throws with a readable reason when it cannot.</summary>
    public void EnsureStarted()
    {
        lock (_gate)
        {
            if (_process is not null)
            {
                return;
            }
            if (_config.RuntimePath.Contains('/', StringComparison.Ordinal) && !File.Exists(_config.RuntimePath))
            {
                throw new IOException($"the Python interpreter {_config.RuntimePath} does not exist");
            }
            if (!File.Exists(DriverPath))
            {
                throw new IOException($"the driver script {DriverPath} is missing (it ships next to the runner)");
            }
            ChildProcess process = ProcessSpawner.Start(new ProcessStartSpec
            {
                Executable = _config.RuntimePath,
                Arguments = [_config.RuntimePath, DriverPath, "3", "4"],
                Environment = _config.ChildEnvironment,
                WorkingDirectory = Directory.Exists(_config.WorkDir) ? _config.WorkDir : null,
                WithControlChannel = true,
            });
            _process = process;
            _frames = new FrameReader();
            var pump = new PipePump($"python-{process.Pid}", [process.StdoutFd, process.StderrFd, process.EventsReadFd],
                (index, data) => OnOutput(process, index, data), process.Exited);
            _pump = pump;
            _ = pump.Finished.ContinueWith(_ => OnInterpreterGoneAsync(process), TaskScheduler.Default).Unwrap();
            Log.Info($"started Python interpreter {_config.RuntimePath} (pid {process.Pid})");
        }
    }

    public bool IsBusy
    {
        get
        {
            lock (_gate)
            {
                return _currentRun is not null;
            }
        }
    }

    /// <summary>Runs source code; completes once "finished" has been queued for the agent.</summary>
    public async Task<int> RunAsync(string source)
    {
        EnsureStarted();
        var run = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            if (_process is null)
            {
                // It died between EnsureStarted and now, and its exit handler has already run.
                _link.SendRunOutput("stderr", "kata-runner: the Python interpreter is not running; run again to restart it.\n");
                _link.SendRunOutput("finished", "{\"exitCode\": 1}");
                return 1;
            }
            _currentRun = run;
            if (!FdWriter.WriteAll(_process.ControlWriteFd, FrameReader.Encode((byte)'r', Encoding.UTF8.GetBytes(source))))
            {
                // The interpreter is dying; its exit handler finishes this run.
                Log.Warn("could not hand code to the interpreter");
            }
        }
        return await run.Task;
    }

    /// <summary>
    /// A pool member's idle interpreter takes its tenant's environment (os.environ: for it and what it starts);
    /// false when it is not running, busy, or the pipe is gone.
    /// </summary>
    public bool TryApplyEnvironment(IReadOnlyList<(string Key, string Value)> environ)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            foreach ((string key, string value) in environ)
            {
                writer.WriteString(key, value);
            }
            writer.WriteEndObject();
        }
        lock (_gate)
        {
            return _process is not null && _currentRun is null
                && FdWriter.WriteAll(_process.ControlWriteFd, FrameReader.Encode((byte)'E', buffer.ToArray()));
        }
    }

    /// <summary>Stops the interpreter for good (no run is told); the next run starts a fresh one.</summary>
    public async Task DiscardAsync(TimeSpan grace)
    {
        ChildProcess? process;
        lock (_gate)
        {
            process = _process;
            _process = null;
            _pump = null;
            _frames = null;
        }
        if (process is not null)
        {
            await process.TerminateAsync(grace);
        }
    }

    public void SendInput(string text)
    {
        lock (_gate)
        {
            if (_process is not null)
            {
                _ = FdWriter.WriteAll(_process.ControlWriteFd, FrameReader.Encode((byte)'i', Encoding.UTF8.GetBytes(text)));
            }
        }
    }

    /// <summary>SIGINT to the interpreter's process group: the code gets KeyboardInterrupt, state stays.</summary>
    public void Interrupt()
    {
        ChildProcess? process;
        lock (_gate)
        {
            process = _currentRun is null ? null : _process;
        }
        process?.SignalGroup(Libc.SIGINT);
    }

    /// <summary>Asks the idle interpreter for completions; false when it is busy or not running.</summary>
    public bool TryRequestCompletion(byte[] requestJson)
    {
        lock (_gate)
        {
            return _process is not null && _currentRun is null
                && FdWriter.WriteAll(_process.ControlWriteFd, FrameReader.Encode((byte)'c', requestJson));
        }
    }

    /// <summary>Terminates the interpreter, then waits (at most <paramref name="outputWait"/>) until what it wrote is queued for the agent.</summary>
    public async Task StopAsync(TimeSpan grace, TimeSpan outputWait)
    {
        ChildProcess? process;
        PipePump? pump;
        lock (_gate)
        {
            process = _process;
            pump = _pump;
        }
        if (process is not null)
        {
            await process.TerminateAsync(grace);
        }
        if (pump is not null)
        {
            await Task.WhenAny(pump.Finished, Task.Delay(outputWait));
        }
    }

    // Runs on the pump thread. index: 0 raw stdout, 1 raw stderr, 2 framed events.
    private void OnOutput(ChildProcess process, int index, ReadOnlySpan<byte> data)
    {
        if (index < 2)
        {
            _link.SendRunOutput(index == 0 ? "stdout" : "stderr", data.ToArray());
            return;
        }
        FrameReader frames;
        lock (_gate)
        {
            if (!ReferenceEquals(process, _process) || _frames is null)
            {
                return;
            }
            frames = _frames;
        }
        var merged = new MemoryStream();
        byte mergedKind = 0;
        void FlushMerged()
        {
            if (merged.Length > 0)
            {
                _link.SendRunOutput(mergedKind == (byte)'o' ? "stdout" : "stderr", merged.ToArray());
                merged.SetLength(0);
            }
        }
        List<FramePiece> pieces;
        try
        {
            pieces = frames.Append(data);
        }
        catch (FrameProtocolException broken)
        {
            StopOnBrokenChannel(process, broken.Message);
            return;
        }
        foreach ((byte kind, byte[] payload, _) in pieces)
        {
            switch ((char)kind)
            {
                case 'o' or 'e':
                    // Pieces are at most one pipe read (64 KiB), so a merged message stays within the bound.
                    if (kind != mergedKind || merged.Length + payload.Length > MaxMergedMessageBytes)
                    {
                        FlushMerged();
                        mergedKind = kind;
                    }
                    merged.Write(payload);
                    break;
                case 'w':
                    FlushMerged();
                    _link.SendRunOutput("waiting-input", payload);
                    break;
                case 'f':
                    FlushMerged();
                    // Output written straight to fd 1/2 before the run ended must precede "finished".
                    _pump?.DrainAvailable(2);
                    _link.SendRunOutput("finished", payload);
                    CompleteRun(ReadExitCode(payload));
                    break;
                case 'C':
                    FlushMerged();
                    _link.SendReply("completion", payload);
                    break;
                case 'm':
                    FlushMerged();
                    if (!IsMediaItem(payload))
                    {
                        StopOnBrokenChannel(process, "a media frame that is not a JSON {\"type\": string, \"data\": string} object");
                        return;
                    }
                    _link.SendRunOutput("media", payload);
                    break;
                case 'R':
                    Log.Info($"interpreter ready: {Encoding.UTF8.GetString(payload)}");
                    break;
            }
        }
        FlushMerged();
    }

    // The event channel is the only ordering between output and "finished": once something other than
    // the driver wrote to it, nothing more on it can be believed. The run ends; the next starts afresh.
    private void StopOnBrokenChannel(ChildProcess process, string what)
    {
        lock (_gate)
        {
            if (!ReferenceEquals(process, _process))
            {
                return;
            }
            _frames = null;
        }
        Log.Warn($"the interpreter's event channel carried {what}; stopping the interpreter");
        _link.SendRunOutput("stderr",
            $"\nkata-runner: the interpreter's event channel (fd 4) carried {what} - only the runner's driver may write to it. " +
            "The interpreter was stopped.\n");
        process.SignalGroup(Libc.SIGKILL);
    }

    private async Task OnInterpreterGoneAsync(ChildProcess process)
    {
        if (await Task.WhenAny(process.Exited, Task.Delay(TimeSpan.FromSeconds(5))) != process.Exited)
        {
            process.SignalGroup(Libc.SIGKILL);
        }
        int exitCode = await process.Exited;
        lock (_gate)
        {
            if (ReferenceEquals(_process, process))
            {
                _process = null;
                _pump = null;
                _frames = null;
            }
            _ = Libc.close(process.ControlWriteFd);
        }
        Log.Warn($"the Python interpreter (pid {process.Pid}) exited with code {exitCode}");
        if (IsBusy)
        {
            if (!_link.Stopping)
            {
                // Stopping, the run was cut short by the runner's own stop, which the agent learns of directly.
                _link.SendRunOutput("stderr", $"\nkata-runner: the Python interpreter exited with code {exitCode}; its state is lost.\n");
                _link.SendRunOutput("finished", $"{{\"exitCode\": {(exitCode == 0 ? 1 : exitCode)}}}");
            }
            CompleteRun(exitCode == 0 ? 1 : exitCode);
        }
    }

    private void CompleteRun(int exitCode)
    {
        TaskCompletionSource<int>? run;
        lock (_gate)
        {
            run = _currentRun;
            _currentRun = null;
        }
        run?.TrySetResult(exitCode);
    }

    // The agent parses media items as {"type", "data"}; the driver writes nothing else (user code writing fd 4 might).
    private static bool IsMediaItem(byte[] payload)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(payload);
            JsonElement root = document.RootElement;
            return root.ValueKind == JsonValueKind.Object
                && root.TryGetProperty("type", out JsonElement type) && type.ValueKind == JsonValueKind.String
                && root.TryGetProperty("data", out JsonElement data) && data.ValueKind == JsonValueKind.String;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private static int ReadExitCode(byte[] finishedJson)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(finishedJson);
            return document.RootElement.GetProperty("exitCode").GetInt32();
        }
        catch (Exception exception) when (exception is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            return 1;
        }
    }
}
