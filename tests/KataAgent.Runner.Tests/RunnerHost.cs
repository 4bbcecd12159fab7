using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Runner.Tests;

/// <summary>
/// One runner process on the host with its own temp config and work dirs and free 127.0.0.1 ports,
/// plus a client connected to it. Disposing stops the runner (SIGTERM, then kills the whole tree)
/// and deletes the dirs, also when the test failed.
/// </summary>
public sealed class RunnerHost : IAsyncDisposable
{
    private readonly StringBuilder _log = new();
    private Process? _process;

    private RunnerHost(string binaryPath, string root, int inputPort, int outputPort)
    {
        BinaryPath = binaryPath;
        Root = root;
        InputPort = inputPort;
        OutputPort = outputPort;
        ConfigDir = Directory.CreateDirectory(Path.Combine(root, "config")).FullName;
        WorkDir = Directory.CreateDirectory(Path.Combine(root, "work")).FullName;
    }

    public string BinaryPath { get; }
    public string Root { get; }
    public string ConfigDir { get; }
    public string WorkDir { get; }
    public int InputPort { get; }
    public int OutputPort { get; }
    public KernelRunnerClient Client { get; private set; } = null!;

    /// <summary>The agent's half of the CURVE keys when started with <c>curve: true</c>, else null.</summary>
    public RunnerCurveKeys? Curve { get; private set; }
    public int Pid => _process?.Id ?? throw new InvalidOperationException("not started");

    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    /// <param name="curve">Write a runner-curve.json (0600) like the agent does, and give the client its keys.</param>
    /// <param name="waitUntilServing">False: return once the process is started, before any status was answered.</param>
    public static async Task<RunnerHost> StartAsync(PublishedRunner runner, Action<RunnerHost>? prepare = null, bool curve = false,
        long maxMessageSize = KernelRunnerClientOptions.DefaultMaxMessageSize, bool waitUntilServing = true, TimeSpan? replyTimeout = null,
        bool sequenced = false, long? replayBufferBytes = null, bool? clientSequenced = null)
    {
        string root = Directory.CreateTempSubdirectory("kata-runner-test-").FullName;
        var host = new RunnerHost(runner.BinaryPath, root, FreePort(), FreePort());
        try
        {
            File.WriteAllText(Path.Combine(host.ConfigDir, "environ.txt"), "KATA_TEST_MARKER=from-environ\nLANG=C.UTF-8\n");
            File.WriteAllText(Path.Combine(host.ConfigDir, "runner.json"), JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["runtimeType"] = "python",
                ["runtimePath"] = PublishedRunner.PythonPath,
                ["workDir"] = host.WorkDir,
                ["bindHost"] = "127.0.0.1",
                ["replInPort"] = host.InputPort,
                ["replOutPort"] = host.OutputPort,
                // Per host: runners of parallel tests must not share Backend.AI's fixed /tmp/bai-user-input.sock.
                ["userInputSocket"] = Path.Combine(host.Root, "user-input.sock"),
                ["sequencedOutput"] = sequenced,
                ["replayBufferBytes"] = replayBufferBytes ?? 16L * 1024 * 1024,
            }));
            if (curve)
            {
                (host.Curve, string keyFile) = RunnerCurveKeys.Generate();
                File.WriteAllText(Path.Combine(host.ConfigDir, RunnerCurveKeys.RunnerFileName), keyFile);
                File.SetUnixFileMode(Path.Combine(host.ConfigDir, RunnerCurveKeys.RunnerFileName), UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }
            prepare?.Invoke(host);
            host.StartProcess();
            var options = new KernelRunnerClientOptions
            {
                InputPort = host.InputPort, OutputPort = host.OutputPort, Curve = host.Curve, MaxMessageSize = maxMessageSize,
                SequencedOutput = clientSequenced ?? sequenced,
            };
            host._clientOptions = replyTimeout is TimeSpan timeout ? options with { ReplyTimeout = timeout } : options;
            host.Client = new KernelRunnerClient(host._clientOptions);
            if (waitUntilServing)
            {
                await host.WaitUntilServingAsync();
            }
            return host;
        }
        catch
        {
            await host.DisposeAsync();
            throw;
        }
    }

    private KernelRunnerClientOptions _clientOptions = null!;

    /// <summary>Disposes the client and connects a new one with the same options (an agent restart, as the runner sees it).</summary>
    public KernelRunnerClient ReplaceClient()
    {
        Client.Dispose();
        Client = new KernelRunnerClient(_clientOptions);
        return Client;
    }

    public void StartProcess()
    {
        var start = new ProcessStartInfo(BinaryPath, ["--config-dir", ConfigDir, "--verbose"])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        _process = Process.Start(start) ?? throw new InvalidOperationException("cannot start the runner");
        _process.ErrorDataReceived += (_, line) => Append(line.Data);
        _process.OutputDataReceived += (_, line) => Append(line.Data);
        _process.BeginErrorReadLine();
        _process.BeginOutputReadLine();
    }

    /// <summary>Status answers once the runner serves (the client queues the request until connected).</summary>
    public async Task WaitUntilServingAsync()
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        string state = await Eventually.WaitAsync(async () =>
            {
                if (_process is { HasExited: true })
                {
                    return "exited";
                }
                try
                {
                    IReadOnlyDictionary<string, object?> status = await Client.GetStatusAsync(limit.Token);
                    return status.TryGetValue("started", out object? started) && started is true ? "serving" : "a status without started";
                }
                catch (Exception exception) when (exception is TimeoutException or RunnerUnavailableException or OperationCanceledException)
                {
                    return exception.Message;
                }
            },
            seen => seen is "serving" or "exited", "the runner to answer a status request as started", cancellationToken: limit.Token);
        if (state == "exited")
        {
            throw new InvalidOperationException($"the runner exited with {_process!.ExitCode}:\n{Log}");
        }
    }

    /// <summary>SIGTERM and wait for the exit; returns the exit code.</summary>
    public async Task<int> StopAsync(TimeSpan timeout)
    {
        Process process = _process ?? throw new InvalidOperationException("not started");
        if (!process.HasExited)
        {
            _ = Kill(process.Id, 15);
        }
        using var limit = new CancellationTokenSource(timeout);
        await process.WaitForExitAsync(limit.Token);
        return process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        Client?.Dispose();
        if (_process is not null)
        {
            List<int> descendants = Descendants(_process.Id);
            try
            {
                if (!_process.HasExited)
                {
                    _ = Kill(_process.Id, 15);
                    using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(15));
                    await _process.WaitForExitAsync(limit.Token);
                }
            }
            catch (OperationCanceledException)
            {
                _process.Kill(entireProcessTree: true);
            }
            // Anything the runner left behind (it should leave nothing) is killed too: its descendants
            // when it stopped, and whatever still runs in this test's work dir (orphans of a killed runner).
            foreach (int pid in descendants.Concat(ProcessesInDirectory(WorkDir)))
            {
                _ = Kill(pid, 9);
            }
            _process.Dispose();
        }
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>All processes below <paramref name="pid"/>, from /proc.</summary>
    public static List<int> Descendants(int pid)
    {
        var parentOf = new Dictionary<int, int>();
        foreach (string directory in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(directory), out int candidate) && TryReadStat(candidate, out _, out int parent))
            {
                parentOf[candidate] = parent;
            }
        }
        var result = new List<int>();
        var frontier = new Queue<int>([pid]);
        while (frontier.TryDequeue(out int current))
        {
            foreach ((int child, int parent) in parentOf)
            {
                if (parent == current)
                {
                    result.Add(child);
                    frontier.Enqueue(child);
                }
            }
        }
        return result;
    }

    public static List<int> ProcessesInDirectory(string directory)
    {
        var found = new List<int>();
        foreach (string entry in Directory.EnumerateDirectories("/proc"))
        {
            try
            {
                if (int.TryParse(Path.GetFileName(entry), out int pid)
                    && new DirectoryInfo(Path.Combine(entry, "cwd")).ResolveLinkTarget(returnFinalTarget: false)?.FullName == directory)
                {
                    found.Add(pid);
                }
            }
            catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
            {
            }
        }
        return found;
    }

    public static bool TryReadStat(int pid, out char state, out int parentPid)
    {
        state = '?';
        parentPid = 0;
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            // The command name is in parentheses and may contain spaces: parse after the last ')'.
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            state = fields[0][0];
            parentPid = int.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture);
            return true;
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException or FormatException)
        {
            return false;
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);

    public static int Kill(int pid, int signal) => kill(pid, signal);

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (_log)
        {
            _log.AppendLine(line);
        }
    }
}
