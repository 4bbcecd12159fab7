using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using KataAgent.Runner.Processes;

namespace KataAgent.Runner.Services;

/// <summary>
/// An in-guest service app as the agent describes it in `start-service`:
/// {"name", "protocol", "port" or "ports", "command": "shell text" or ["argv", ...], "env"?: {...},
///  "startTimeoutSeconds"?: 30}. "{port}" in the command and env values is the first port.
/// </summary>
internal sealed record ServiceDefinition(
    string Name, string Protocol, IReadOnlyList<int> Ports, IReadOnlyList<string> Argv,
    IReadOnlyDictionary<string, string> Environment, TimeSpan StartTimeout)
{
    public static ServiceDefinition Parse(string json)
    {
        using JsonDocument document = JsonDocument.Parse(json);
        JsonElement root = document.RootElement;
        string name = root.GetProperty("name").GetString() ?? throw new InvalidDataException("name is null");
        var ports = new List<int>();
        if (root.TryGetProperty("ports", out JsonElement portList) && portList.ValueKind == JsonValueKind.Array)
        {
            ports.AddRange(portList.EnumerateArray().Select(port => port.GetInt32()));
        }
        if (root.TryGetProperty("port", out JsonElement singlePort) && singlePort.ValueKind == JsonValueKind.Number)
        {
            ports.Insert(0, singlePort.GetInt32());
        }
        string firstPort = ports.Count > 0 ? ports[0].ToString(System.Globalization.CultureInfo.InvariantCulture) : "";
        string Expand(string text) => text.Replace("{port}", firstPort, StringComparison.Ordinal);

        if (!root.TryGetProperty("command", out JsonElement command))
        {
            throw new InvalidDataException($"service '{name}' has no command");
        }
        List<string> argv = command.ValueKind switch
        {
            JsonValueKind.Array => command.EnumerateArray().Select(part => Expand(part.GetString() ?? "")).ToList(),
            JsonValueKind.String => ["/bin/sh", "-c", Expand(command.GetString() ?? "")],
            _ => throw new InvalidDataException("command must be a string or an array of strings"),
        };
        if (argv.Count == 0 || argv[0].Length == 0)
        {
            throw new InvalidDataException($"service '{name}' has an empty command");
        }
        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        if (root.TryGetProperty("env", out JsonElement env) && env.ValueKind == JsonValueKind.Object)
        {
            foreach (JsonProperty variable in env.EnumerateObject())
            {
                environment[variable.Name] = Expand(variable.Value.GetString() ?? "");
            }
        }
        int timeoutSeconds = root.TryGetProperty("startTimeoutSeconds", out JsonElement timeout) && timeout.ValueKind == JsonValueKind.Number
            ? timeout.GetInt32() : 30;
        string protocol = root.TryGetProperty("protocol", out JsonElement protocolValue) ? protocolValue.GetString() ?? "tcp" : "tcp";
        return new ServiceDefinition(name, protocol, ports, argv, environment, TimeSpan.FromSeconds(timeoutSeconds));
    }
}

/// <summary>Starts, tracks and stops service apps. A service is "started" once all its ports accept TCP connections.</summary>
internal sealed class ServiceManager : IDisposable
{
    private const int OutputTailBytes = 4096;

    private readonly RunnerConfig _config;
    private readonly Dictionary<string, RunningService> _services = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _gate = new(1, 1);

    public ServiceManager(RunnerConfig config) => _config = config;

    public void Dispose() => _gate.Dispose();

    public int Count
    {
        get
        {
            lock (_services)
            {
                return _services.Count(service => !service.Value.Process.HasExited);
            }
        }
    }

    /// <summary>Answers the `service-result` payload: started, running or failed with a reason.</summary>
    public async Task<string> StartAsync(string requestJson, CancellationToken stopping)
    {
        ServiceDefinition definition;
        try
        {
            definition = ServiceDefinition.Parse(requestJson);
        }
        catch (Exception exception) when (exception is JsonException or InvalidDataException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            return Result("failed", $"invalid service description: {exception.Message}");
        }
        await _gate.WaitAsync(stopping);
        try
        {
            lock (_services)
            {
                if (_services.TryGetValue(definition.Name, out RunningService? existing) && !existing.Process.HasExited)
                {
                    return Result("running");
                }
            }
            var environment = new Dictionary<string, string>(_config.ChildEnvironment, StringComparer.Ordinal);
            foreach ((string key, string value) in definition.Environment)
            {
                environment[key] = value;
            }
            ChildProcess process;
            try
            {
                process = ProcessSpawner.Start(new ProcessStartSpec
                {
                    Executable = definition.Argv[0],
                    Arguments = definition.Argv,
                    Environment = environment,
                    WorkingDirectory = Directory.Exists(_config.WorkDir) ? _config.WorkDir : null,
                });
            }
            catch (IOException exception)
            {
                return Result("failed", exception.Message);
            }
            var service = new RunningService(definition, process);
            Log.Info($"service '{definition.Name}' started (pid {process.Pid}), waiting for port(s) {string.Join(",", definition.Ports)}");
            string? failure = await WaitUntilListeningAsync(service, stopping);
            if (failure is not null)
            {
                await process.TerminateAsync(TimeSpan.FromSeconds(3));
                Log.Warn($"service '{definition.Name}' failed: {failure}");
                return Result("failed", failure);
            }
            lock (_services)
            {
                _services[definition.Name] = service;
            }
            return Result("started");
        }
        finally
        {
            _gate.Release();
        }
    }

    public async Task StopAsync(string name)
    {
        RunningService? service;
        lock (_services)
        {
            _services.Remove(name, out service);
        }
        if (service is null)
        {
            Log.Warn($"shutdown-service: no service named '{name}'");
            return;
        }
        await service.Process.TerminateAsync(TimeSpan.FromSeconds(5));
        Log.Info($"service '{name}' stopped");
    }

    public async Task StopAllAsync(TimeSpan grace)
    {
        List<RunningService> all;
        lock (_services)
        {
            all = [.. _services.Values];
            _services.Clear();
        }
        await Task.WhenAll(all.Select(service => service.Process.TerminateAsync(grace)));
    }

    /// <summary>The `apps-result` payload.</summary>
    public string DescribeApps()
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("status", "done");
            writer.WriteStartArray("data");
            lock (_services)
            {
                foreach (RunningService service in _services.Values)
                {
                    writer.WriteStartObject();
                    writer.WriteString("name", service.Definition.Name);
                    writer.WriteString("protocol", service.Definition.Protocol);
                    writer.WriteStartArray("ports");
                    foreach (int port in service.Definition.Ports)
                    {
                        writer.WriteNumberValue(port);
                    }
                    writer.WriteEndArray();
                    writer.WriteBoolean("running", !service.Process.HasExited);
                    writer.WriteNumber("pid", service.Process.Pid);
                    writer.WriteEndObject();
                }
            }
            writer.WriteEndArray();
            writer.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    private static async Task<string?> WaitUntilListeningAsync(RunningService service, CancellationToken stopping)
    {
        DateTime deadline = DateTime.UtcNow + service.Definition.StartTimeout;
        var pending = new List<int>(service.Definition.Ports);
        while (true)
        {
            if (service.Process.HasExited)
            {
                int exitCode = await service.Process.Exited;
                await Task.WhenAny(service.Pump.Finished, Task.Delay(TimeSpan.FromSeconds(1), stopping));
                string tail = service.OutputTail().Trim();
                return $"exited with code {exitCode} before listening" + (tail.Length > 0 ? $"; output: {tail}" : "");
            }
            for (int i = pending.Count - 1; i >= 0; i--)
            {
                if (await AcceptsConnectionsAsync(pending[i], stopping))
                {
                    pending.RemoveAt(i);
                }
            }
            if (pending.Count == 0)
            {
                return null;
            }
            if (DateTime.UtcNow > deadline)
            {
                return $"not listening on port(s) {string.Join(",", pending)} after {service.Definition.StartTimeout.TotalSeconds:0} s";
            }
            await Task.Delay(200, stopping);
        }
    }

    private static async Task<bool> AcceptsConnectionsAsync(int port, CancellationToken stopping)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        attempt.CancelAfter(TimeSpan.FromSeconds(2));
        try
        {
            await socket.ConnectAsync(System.Net.IPAddress.Loopback, port, attempt.Token);
            return true;
        }
        catch (Exception exception) when (exception is SocketException or OperationCanceledException && !stopping.IsCancellationRequested)
        {
            return false;
        }
    }

    private static string Result(string status, string? error = null)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("status", status);
            if (error is not null)
            {
                writer.WriteString("error", error);
            }
            writer.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    private sealed class RunningService
    {
        private readonly byte[] _tail = new byte[OutputTailBytes];
        private int _tailLength;

        public RunningService(ServiceDefinition definition, ChildProcess process)
        {
            Definition = definition;
            Process = process;
            // Keeps the service's pipes drained (so it never blocks on output) and remembers the last
            // few KiB to explain a failed start.
            Pump = new PipePump($"service-{definition.Name}", [process.StdoutFd, process.StderrFd], (_, data) => Remember(data), process.Exited);
        }

        public ServiceDefinition Definition { get; }
        public ChildProcess Process { get; }
        public PipePump Pump { get; }

        public string OutputTail()
        {
            lock (_tail)
            {
                return Encoding.UTF8.GetString(_tail, 0, _tailLength);
            }
        }

        private void Remember(ReadOnlySpan<byte> data)
        {
            lock (_tail)
            {
                if (data.Length >= _tail.Length)
                {
                    data[^_tail.Length..].CopyTo(_tail);
                    _tailLength = _tail.Length;
                    return;
                }
                int overflow = Math.Max(0, _tailLength + data.Length - _tail.Length);
                if (overflow > 0)
                {
                    Buffer.BlockCopy(_tail, overflow, _tail, 0, _tailLength - overflow);
                    _tailLength -= overflow;
                }
                data.CopyTo(_tail.AsSpan(_tailLength));
                _tailLength += data.Length;
            }
        }
    }
}
