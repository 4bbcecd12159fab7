using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace KataAgent.Containerd.Private;

public sealed record PrivateContainerdOptions(string RootDir)
{
    /// <summary>Defaults to RootDir/state. Keep it short: it hosts the shims' unix sockets.</summary>
    public string? StateDir { get; init; }
    /// <summary>Defaults to RootDir/containerd.sock; must stay under the 107-byte sun_path limit.</summary>
    public string? SocketPath { get; init; }
    public string ContainerdBinary { get; init; } = "containerd";
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(30);
    public TimeSpan StopTimeout { get; init; } = TimeSpan.FromSeconds(15);
    /// <summary>Extra TOML appended to the generated config (e.g. runtime tables).</summary>
    public string ExtraConfig { get; init; } = "";
}

/// <summary>
/// A containerd of our own: own root, state, socket. Tests use it, and the agent uses it
/// when no containerd address is configured.
/// </summary>
public sealed class PrivateContainerd : IAsyncDisposable
{
    private readonly Process? _process;
    private readonly int _adoptedPid;
    private readonly StringBuilder _log;

    private PrivateContainerd(Process? process, int adoptedPid, StringBuilder log, string socketPath, string rootDir, string stateDir, string configPath)
    {
        _process = process;
        _adoptedPid = adoptedPid;
        _log = log;
        SocketPath = socketPath;
        RootDir = rootDir;
        StateDir = stateDir;
        ConfigPath = configPath;
    }

    public string SocketPath { get; }
    public string RootDir { get; }
    public string StateDir { get; }
    public string ConfigPath { get; }
    public int Pid => _process?.Id ?? _adoptedPid;
    public bool HasExited => _process?.HasExited ?? !Directory.Exists($"/proc/{_adoptedPid}");
    /// <summary>True when an instance left running by an earlier (killed) agent was taken over.</summary>
    public bool Adopted => _process is null;

    /// <summary>What containerd printed so far (for error messages).</summary>
    public string Log
    {
        get { lock (_log) return _log.ToString(); }
    }

    public ContainerdClient CreateClient(string ns = ContainerdClient.DefaultNamespace) => ContainerdClient.Connect(SocketPath, ns);

    public static async Task<PrivateContainerd> StartAsync(PrivateContainerdOptions options, CancellationToken cancellationToken = default)
    {
        var root = Path.GetFullPath(options.RootDir);
        var state = Path.GetFullPath(options.StateDir ?? Path.Combine(root, "state"));
        var socket = Path.GetFullPath(options.SocketPath ?? Path.Combine(root, "containerd.sock"));
        if (Encoding.UTF8.GetByteCount(socket) > 100)
            throw new ArgumentException($"containerd socket path is too long for a unix socket ({socket}); choose a shorter root or socket path", nameof(options));
        Directory.CreateDirectory(root);
        Directory.CreateDirectory(state);
        Directory.CreateDirectory(Path.GetDirectoryName(socket)!);

        var configPath = Path.Combine(root, "config.toml");
        var pidFile = Path.Combine(root, "containerd.pid");
        // An agent killed with -9 leaves its containerd running: take it over rather than start a
        // second one on the same root (which would block on the metadata lock).
        if (await TryAdoptAsync(pidFile, socket, cancellationToken).ConfigureAwait(false) is { } adoptedPid)
            return new PrivateContainerd(null, adoptedPid, new StringBuilder(), socket, root, state, configPath);
        if (File.Exists(socket))
            File.Delete(socket);
        await File.WriteAllTextAsync(configPath, RenderConfig(root, state, socket) + options.ExtraConfig, cancellationToken).ConfigureAwait(false);

        var log = new StringBuilder();
        var psi = new ProcessStartInfo(options.ContainerdBinary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("--config");
        psi.ArgumentList.Add(configPath);
        var process = new Process { StartInfo = psi };
        process.OutputDataReceived += (_, e) => Append(log, e.Data);
        process.ErrorDataReceived += (_, e) => Append(log, e.Data);
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            process.Dispose();
            throw new InvalidOperationException($"cannot start '{options.ContainerdBinary}': {e.Message}. Install the Debian package 'containerd' (scripts/setup.sh does).", e);
        }
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        await File.WriteAllTextAsync(pidFile, process.Id.ToString(CultureInfo.InvariantCulture), cancellationToken).ConfigureAwait(false);

        var instance = new PrivateContainerd(process, 0, log, socket, root, state, configPath);
        try
        {
            await instance.WaitUntilServingAsync(options.StartTimeout, cancellationToken).ConfigureAwait(false);
            return instance;
        }
        catch
        {
            await instance.StopAsync(options.StopTimeout, CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    private static async Task<int?> TryAdoptAsync(string pidFile, string socket, CancellationToken cancellationToken)
    {
        if (!File.Exists(pidFile) || !int.TryParse(await File.ReadAllTextAsync(pidFile, cancellationToken).ConfigureAwait(false), out var pid))
            return null;
        string? cmdline = null;
        try
        {
            cmdline = await File.ReadAllTextAsync($"/proc/{pid}/cmdline", cancellationToken).ConfigureAwait(false);
        }
        catch (IOException)
        {
        }
        if (cmdline is null || !cmdline.Contains("containerd", StringComparison.Ordinal) || !File.Exists(socket))
            return null;
        using var client = ContainerdClient.Connect(socket);
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        attempt.CancelAfter(TimeSpan.FromSeconds(5));
        try
        {
            await client.Version.GetAsync(attempt.Token).ConfigureAwait(false);
            return pid;
        }
        catch (Exception e) when (e is ContainerdException or OperationCanceledException or HttpRequestException && !cancellationToken.IsCancellationRequested)
        {
            // Alive but not answering: stop it so a fresh one can start.
            _ = Posix.Kill(pid, Posix.SIGKILL);
            for (var i = 0; i < 100 && Directory.Exists($"/proc/{pid}"); i++)
                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
            return null;
        }
    }

    private async Task WaitUntilServingAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var client = CreateClient();
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (_process!.HasExited)
                throw new InvalidOperationException($"containerd exited with code {_process.ExitCode} while starting:\n{Tail(Log)}");
            if (File.Exists(SocketPath))
            {
                try
                {
                    using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                    attempt.CancelAfter(TimeSpan.FromSeconds(2));
                    await client.Version.GetAsync(attempt.Token).ConfigureAwait(false);
                    return;
                }
                catch (Exception e) when (e is ContainerdException or OperationCanceledException or HttpRequestException && !cancellationToken.IsCancellationRequested)
                {
                    // not serving yet
                }
            }
            if (deadline.Elapsed > timeout)
                throw new TimeoutException($"containerd did not answer on {SocketPath} within {timeout.TotalSeconds:0} s:\n{Tail(Log)}");
            await Task.Delay(25, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>SIGTERM, then SIGKILL after the timeout. Shims of live tasks outlive containerd by design.</summary>
    public async Task StopAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        if (_process is null)
        {
            await StopAdoptedAsync(timeout, cancellationToken).ConfigureAwait(false);
            return;
        }
        if (!_process.HasExited)
        {
            _ = Posix.Kill(_process.Id, Posix.SIGTERM);
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            wait.CancelAfter(timeout);
            try
            {
                await _process.WaitForExitAsync(wait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                _process.Kill();
                await _process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    private async Task StopAdoptedAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (!Directory.Exists($"/proc/{_adoptedPid}"))
            return;
        _ = Posix.Kill(_adoptedPid, Posix.SIGTERM);
        var deadline = Stopwatch.StartNew();
        while (Directory.Exists($"/proc/{_adoptedPid}") && deadline.Elapsed < timeout)
            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        if (Directory.Exists($"/proc/{_adoptedPid}"))
            _ = Posix.Kill(_adoptedPid, Posix.SIGKILL);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.FromSeconds(15)).ConfigureAwait(false);
        _process?.Dispose();
    }

    private static string RenderConfig(string root, string state, string socket)
    {
        static string Q(string s) => "\"" + s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
        // CRI is not ours to drive and costs start-up time; unusable snapshotters only add noise.
        return string.Create(CultureInfo.InvariantCulture, $"""
            version = 2
            root = {Q(root)}
            state = {Q(state)}
            disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

            [grpc]
              address = {Q(socket)}

            [ttrpc]
              address = {Q(socket + ".ttrpc")}

            [debug]
              address = ""

            [metrics]
              address = ""

            [plugins."io.containerd.internal.v1.opt"]
              path = {Q(Path.Combine(root, "opt"))}

            """);
    }

    private static void Append(StringBuilder log, string? line)
    {
        if (line is null)
            return;
        lock (log)
        {
            // Bounded: containerd can be chatty over a long life.
            if (log.Length > 256 * 1024)
                log.Remove(0, 128 * 1024);
            log.AppendLine(line);
        }
    }

    private static string Tail(string text) => text.Length <= 4000 ? text : text[^4000..];
}
