using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Network;

/// <summary>
/// Executes one CNI plugin binary per the CNI 1.0 protocol: the command and attachment in CNI_* environment
/// variables, the network configuration on stdin, a result (or an error object) on stdout.
/// </summary>
public sealed class CniPluginInvoker
{
    public static readonly IReadOnlyList<string> DefaultPluginDirectories = ["/usr/lib/cni", "/opt/cni/bin"];
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    // Plugins (portmap, firewall) run iptables by name; a daemon started with a minimal PATH must still find it.
    private const string SbinPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    private readonly ILogger _logger;

    public CniPluginInvoker(IReadOnlyList<string>? pluginDirectories = null, TimeSpan? timeout = null, ILogger? logger = null)
    {
        PluginDirectories = pluginDirectories is { Count: > 0 } ? pluginDirectories : DefaultPluginDirectories;
        Timeout = timeout ?? DefaultTimeout;
        if (Timeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(timeout), Timeout, "CNI plugin timeout must be positive");
        _logger = logger ?? NullLogger.Instance;
    }

    public IReadOnlyList<string> PluginDirectories { get; }
    public TimeSpan Timeout { get; }

    /// <summary>Path of the executable for a plugin type: the first match in the plugin directories.</summary>
    public string FindPlugin(string type)
    {
        if (string.IsNullOrEmpty(type) || type.Contains('/') || type == "." || type == "..")
            throw new CniException($"invalid CNI plugin type '{type}'");
        foreach (string directory in PluginDirectories)
        {
            string candidate = Path.Combine(directory, type);
            if (File.Exists(candidate))
                return candidate;
        }
        throw new CniPluginNotFoundException(type, PluginDirectories);
    }

    /// <summary>
    /// Runs the plugin and returns its parsed stdout (null when empty, as DEL and CHECK may print nothing).
    /// A non-zero exit becomes <see cref="CniPluginException"/>; so does exceeding <see cref="Timeout"/>, after
    /// the plugin and its children (iptables) are killed. Cancellation kills them too.
    /// </summary>
    public async Task<JsonObject?> InvokeAsync(CniCommand command, string type, JsonObject config, CniRuntimeConfig runtime,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(runtime);
        string path = FindPlugin(type);
        byte[] stdin = Encoding.UTF8.GetBytes(config.ToJsonString());

        var startInfo = new ProcessStartInfo(path)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = "/",
        };
        foreach (string key in startInfo.Environment.Keys.Where(k => k.StartsWith("CNI_", StringComparison.Ordinal)).ToList())
            startInfo.Environment.Remove(key);
        startInfo.Environment["CNI_COMMAND"] = command.ToEnvironmentValue();
        startInfo.Environment["CNI_CONTAINERID"] = runtime.ContainerId;
        startInfo.Environment["CNI_NETNS"] = runtime.NetnsPath;
        startInfo.Environment["CNI_IFNAME"] = runtime.InterfaceName;
        startInfo.Environment["CNI_PATH"] = string.Join(':', PluginDirectories);
        if (runtime.Args.Count > 0)
            startInfo.Environment["CNI_ARGS"] = string.Join(';', runtime.Args.Select(a => $"{a.Key}={a.Value}"));
        string? currentPath = startInfo.Environment.TryGetValue("PATH", out var p) ? p : null;
        startInfo.Environment["PATH"] = string.IsNullOrEmpty(currentPath) ? SbinPath : currentPath + ":" + SbinPath;

        var stopwatch = Stopwatch.StartNew();
        using var process = new Process { StartInfo = startInfo };
        try
        {
            process.Start();
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or IOException)
        {
            throw new CniPluginException(type, command, $"CNI plugin '{type}' {command.ToEnvironmentValue()}: cannot execute {path}: {e.Message}", inner: e);
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(Timeout);
        Task<string> stdoutTask = process.StandardOutput.ReadToEndAsync(timeout.Token);
        Task<string> stderrTask = process.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            try
            {
                await process.StandardInput.BaseStream.WriteAsync(stdin, timeout.Token).ConfigureAwait(false);
                process.StandardInput.Close();
            }
            catch (IOException)
            {
                // The plugin exited without reading all of stdin (EPIPE); its exit status and output tell why.
            }
            await process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            KillTree(process);
            await ObserveQuietly(process.WaitForExitAsync(CancellationToken.None), stdoutTask, stderrTask).ConfigureAwait(false);
            if (cancellationToken.IsCancellationRequested)
                throw;
            throw new CniPluginException(type, command,
                $"CNI plugin '{type}' {command.ToEnvironmentValue()} for container '{runtime.ContainerId}' timed out after {Timeout.TotalSeconds:0.#} s and was killed",
                timedOut: true);
        }

        string stdout, stderr;
        try
        {
            stdout = await stdoutTask.ConfigureAwait(false);
            stderr = await stderrTask.ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            // The plugin exited but a child kept its stdout open past the timeout.
            throw new CniPluginException(type, command,
                $"CNI plugin '{type}' {command.ToEnvironmentValue()} exited but its output did not close within {Timeout.TotalSeconds:0.#} s",
                exitCode: process.ExitCode, timedOut: true);
        }
        _logger.LogDebug("CNI {Plugin} {Command} {Container}: exit {Exit} in {Ms} ms", type, command, runtime.ContainerId, process.ExitCode, stopwatch.ElapsedMilliseconds);

        if (process.ExitCode != 0)
            throw ToPluginException(type, command, runtime, process.ExitCode, stdout, stderr);
        if (string.IsNullOrWhiteSpace(stdout))
            return null;
        try
        {
            return JsonNode.Parse(stdout) as JsonObject
                   ?? throw new CniPluginException(type, command, $"CNI plugin '{type}' {command.ToEnvironmentValue()} printed JSON that is not an object: {Truncate(stdout)}", exitCode: 0, stderr: stderr);
        }
        catch (JsonException e)
        {
            throw new CniPluginException(type, command, $"CNI plugin '{type}' {command.ToEnvironmentValue()} printed invalid JSON: {e.Message}: {Truncate(stdout)}",
                exitCode: 0, stderr: stderr, inner: e);
        }
    }

    private static CniPluginException ToPluginException(string type, CniCommand command, CniRuntimeConfig runtime, int exitCode, string stdout, string stderr)
    {
        string verb = command.ToEnvironmentValue();
        JsonObject? error = null;
        try
        {
            error = string.IsNullOrWhiteSpace(stdout) ? null : JsonNode.Parse(stdout) as JsonObject;
        }
        catch (JsonException)
        {
            // Not a CNI error object; reported below with the raw output.
        }
        int? code = error?["code"] is JsonValue c && c.TryGetValue(out int parsed) ? parsed : null;
        string? msg = error?["msg"] is JsonValue m && m.TryGetValue(out string? s) ? s : null;
        string? details = error?["details"] is JsonValue d && d.TryGetValue(out string? t) && !string.IsNullOrEmpty(t) ? t : null;
        string message = code is not null || msg is not null
            ? $"CNI plugin '{type}' {verb} for container '{runtime.ContainerId}' failed with code {code}: {msg}" + (details is null ? "" : $" ({details})")
            : $"CNI plugin '{type}' {verb} for container '{runtime.ContainerId}' exited with status {exitCode}: {Truncate(string.IsNullOrWhiteSpace(stderr) ? stdout : stderr)}";
        return new CniPluginException(type, command, message, code, msg, details, exitCode, stderr);
    }

    private static void KillTree(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // Already exited.
        }
    }

    private static async Task ObserveQuietly(params Task[] tasks)
    {
        foreach (var task in tasks)
        {
            try
            {
                await task.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }
            catch (Exception)
            {
                // Only reaping a killed plugin and draining its pipes; the timeout is what gets reported.
            }
        }
    }

    private static string Truncate(string text) => text.Length <= 2000 ? text.Trim() : text[..2000] + "...";
}
