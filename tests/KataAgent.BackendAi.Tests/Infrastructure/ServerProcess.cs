using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace KataAgent.BackendAi.Tests.Infrastructure;

/// <summary>
/// A server binary the tests start on 127.0.0.1 with its data in its own temp dir (/tmp/ka-&lt;name&gt;-…): output
/// kept for failure messages, Stop/Start on the same port, dispose kills it and removes the dir.
/// </summary>
public abstract class ServerProcess : IAsyncDisposable
{
    private readonly StringBuilder _log = new();
    private Process? _process;
    private int _disposed;

    protected ServerProcess(string name)
    {
        DataDir = Path.Combine(Path.GetTempPath(), $"ka-{name}-{Guid.NewGuid().ToString("N")[..10]}");
        Directory.CreateDirectory(DataDir);
    }

    public string DataDir { get; }

    public bool IsRunning => _process is { HasExited: false };

    public string Log
    {
        get
        {
            lock (_log)
                return _log.ToString();
        }
    }

    protected abstract string Binary { get; }

    protected abstract IReadOnlyList<string> Arguments { get; }

    /// <summary>True once the server answers on its port.</summary>
    protected abstract Task<bool> ProbeAsync(CancellationToken cancellationToken);

    /// <summary>Starts the server (again, on the same ports) and waits until it answers.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (IsRunning)
            throw new InvalidOperationException($"{Binary} is already running");
        var start = new ProcessStartInfo(Binary, Arguments)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
            WorkingDirectory = DataDir,
        };
        // An operator's ETCD_* settings must not reach the test's etcd.
        foreach (var key in start.Environment.Keys.Where(k => k.StartsWith("ETCD", StringComparison.Ordinal)).ToList())
            start.Environment.Remove(key);
        var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {Binary}");
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (process.HasExited)
                throw new InvalidOperationException($"{Binary} exited with {process.ExitCode} while starting: {Log}");
            if (await ProbeAsync(cancellationToken))
                return;
            if (clock.Elapsed > TimeSpan.FromSeconds(60))
                throw new TimeoutException($"{Binary} did not answer within 60 s: {Log}");
            await Task.Delay(50, cancellationToken);
        }
    }

    /// <summary>Kills the server (SIGKILL: as abrupt as a crash) and waits until it is gone; the data dir stays.</summary>
    public async Task StopAsync()
    {
        var process = _process;
        if (process is null)
            return;
        _process = null;
        try
        {
            if (!process.HasExited)
                process.Kill(entireProcessTree: true);
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await process.WaitForExitAsync(wait.Token);
        }
        catch (InvalidOperationException)
        {
        }
        finally
        {
            process.Dispose();
        }
    }

    /// <summary>Stop, then start again on the same port with the same data dir.</summary>
    public async Task RestartAsync(CancellationToken cancellationToken = default)
    {
        await StopAsync();
        // The port was just released; another process grabbing it in between is unlikely but retried.
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await StartAsync(cancellationToken);
                return;
            }
            catch (InvalidOperationException) when (attempt < 5)
            {
                await StopAsync();
                await Task.Delay(200 * attempt, cancellationToken);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
            return;
        try
        {
            await StopAsync();
        }
        finally
        {
            try
            {
                Directory.Delete(DataDir, recursive: true);
            }
            catch (DirectoryNotFoundException)
            {
            }
        }
        GC.SuppressFinalize(this);
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private void Append(string? line)
    {
        if (line is null)
            return;
        lock (_log)
        {
            if (_log.Length < 1 << 20)
                _log.AppendLine(line);
        }
    }
}
