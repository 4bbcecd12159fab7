using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using KataAgent.Runner.Processes;

namespace KataAgent.Runner.Services;

/// <summary>
/// Starts, tracks and stops service apps, resolving a request without a command the way Backend.AI's
/// runner does (see the runner README): preopen, already running, pty, the built-in sshd/ttyd, the
/// service-def files, the runtime's own apps, else "unsupported service".
/// </summary>
internal sealed class ServiceManager : IDisposable
{
    private const int OutputTailBytes = 4096;

    private readonly RunnerConfig _config;
    private readonly Dictionary<string, RunningService> _services = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _gate = new(1, 1);
    // Backend.AI keeps one variable table for the runner's life: what a prestart action stores under its
    // ref stays visible to later services. "ports" is set per start. Used only under _gate.
    private readonly Dictionary<string, object?> _variables = new(StringComparer.Ordinal);
    private readonly BuiltInServices _builtIns;
    private readonly RuntimeApps _runtimeApps;
    private readonly PrestartActions _prestart;
    private readonly Lock _stateGate = new();
    private string? _stateDirectory;

    public ServiceManager(RunnerConfig config)
    {
        _config = config;
        _variables["runtime_path"] = config.RuntimePath;
        _builtIns = new BuiltInServices(config, StateDirectory);
        _runtimeApps = new RuntimeApps(config, StateDirectory);
        _prestart = new PrestartActions(config, StateDirectory);
    }

    public void Dispose()
    {
        _gate.Dispose();
        DeleteStateDirectory();
    }

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

    /// <summary>Answers the `service-result` payload of a `start-service` request.</summary>
    public async Task<string> StartAsync(string requestJson, CancellationToken stopping)
    {
        ServiceRequest request;
        try
        {
            request = ServiceRequest.Parse(requestJson);
        }
        catch (InvalidDataException exception)
        {
            Log.Warn($"start-service: invalid request: {exception.Message}");
            return Result("failed", $"invalid start-service request: {exception.Message}");
        }
        return await StartAsync(request, stopping);
    }

    /// <summary>Starts a service (also usable by the runner itself, e.g. for sshd/ttyd at start-up); returns the `service-result` payload.</summary>
    public async Task<string> StartAsync(ServiceRequest request, CancellationToken stopping)
    {
        // The protocol rules are Backend.AI's, for requests without a command; the extension's command always runs.
        if (request.Protocol == "preopen" && request.Command is null)
        {
            // The user starts a preopen service by hand; its port is only published.
            return Result("started");
        }
        await _gate.WaitAsync(stopping);
        try
        {
            lock (_services)
            {
                if (_services.TryGetValue(request.Name, out RunningService? existing) && !existing.Process.HasExited)
                {
                    return Result("running");
                }
            }
            if (request.Protocol == "pty" && request.Command is null)
            {
                return Failed(request, "pty services are not implemented");
            }
            ServiceLaunch? launch;
            try
            {
                launch = await ResolveAsync(request, stopping);
            }
            catch (Exception exception) when (exception is ServiceStartException or TemplateException or InvalidDataException or TimeoutException)
            {
                return Failed(request, exception.Message);
            }
            catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
            {
                // Files the runner writes for the service (host keys, configs, prestart files).
                return Failed(request, $"{exception.GetType().Name}: {exception.Message}");
            }
            if (launch is null)
            {
                return Failed(request, $"unsupported service: {request.Name}");
            }
            if (launch.Noop)
            {
                Log.Info($"service '{request.Name}' is a noop definition: nothing to start");
                return Result("started");
            }
            return await LaunchAsync(request.Name, launch, stopping);
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
        DeleteStateDirectory();
    }

    /// <summary>
    /// The `apps-result` payload: the service definitions (not the running processes), all of them for an
    /// empty <paramref name="filter"/>, else only the one of that name. A malformed definition is left
    /// out (and logged); starting it answers the problem.
    /// </summary>
    public async Task<string> DescribeAppsAsync(string filter, CancellationToken stopping)
    {
        var definitions = new List<ServiceDefinitionFile>();
        IEnumerable<string> paths = filter.Length > 0
            ? DefinitionPath(filter) is { } selected ? [selected] : []
            : Directory.Exists(_config.ServiceDefsDir) ? Directory.EnumerateFiles(_config.ServiceDefsDir, "*.json").Order(StringComparer.Ordinal) : [];
        foreach (string path in paths)
        {
            try
            {
                definitions.Add(await Task.Run(() => ServiceDefinitionFile.Load(path), stopping));
            }
            catch (InvalidDataException exception)
            {
                Log.Warn($"get-apps: skipped {exception.Message}");
            }
        }
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("status", "done");
            writer.WriteStartArray("data");
            foreach (ServiceDefinitionFile definition in definitions)
            {
                writer.WriteStartObject();
                writer.WriteString("name", definition.Name);
                if (definition.UrlTemplate.Length > 0)
                {
                    writer.WriteString("url_template", definition.UrlTemplate);
                }
                WriteList(writer, "allowed_arguments", definition.AllowedArguments);
                WriteList(writer, "allowed_envs", definition.AllowedEnvironment);
                writer.WriteEndObject();
            }
            writer.WriteEndArray();
            writer.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    private static void WriteList(Utf8JsonWriter writer, string name, IReadOnlyList<string> values)
    {
        if (values.Count == 0)
        {
            return;
        }
        writer.WriteStartArray(name);
        foreach (string value in values)
        {
            writer.WriteStringValue(value);
        }
        writer.WriteEndArray();
    }

    /// <summary>Backend.AI's order: the built-ins, the service-def file, the runtime's apps. Null: unsupported.</summary>
    private async Task<ServiceLaunch?> ResolveAsync(ServiceRequest request, CancellationToken stopping)
    {
        if (request.Command is { } command)
        {
            return new ServiceLaunch
            {
                Source = "the request's command",
                Argv = command.Argv,
                Environment = command.Environment,
                ReadinessPorts = request.Ports,
                StartTimeout = command.StartTimeout,
            };
        }
        if (await _builtIns.ResolveAsync(request, stopping) is { } builtIn)
        {
            return builtIn;
        }
        if (DefinitionPath(request.Name) is { } path)
        {
            return await FromDefinitionAsync(ServiceDefinitionFile.Load(path), request, stopping);
        }
        return await _runtimeApps.ResolveAsync(request, stopping);
    }

    /// <summary>The definition file of a service, if there is one (names that are not plain file names have none).</summary>
    private string? DefinitionPath(string name)
    {
        if (name is "." or ".." || name.IndexOfAny(['/', '\0']) >= 0)
        {
            return null;
        }
        string path = Path.Combine(_config.ServiceDefsDir, name + ".json");
        return File.Exists(path) ? path : null;
    }

    /// <summary>Backend.AI's ServiceParser.start_service: check the options, run the prestart actions, build argv and env.</summary>
    private async Task<ServiceLaunch> FromDefinitionAsync(ServiceDefinitionFile definition, ServiceRequest request, CancellationToken stopping)
    {
        string source = $"service-def {definition.Path}";
        if (definition.Noop)
        {
            return new ServiceLaunch { Source = source, Argv = [], ReadinessPorts = [], StartTimeout = TimeSpan.Zero };
        }
        // The options are checked before any prestart action has an effect.
        var arguments = new List<KeyValuePair<string, IReadOnlyList<string>>>(definition.DefaultArguments);
        foreach ((string name, IReadOnlyList<string> values) in request.Arguments)
        {
            if (!definition.AllowedArguments.Contains(name, StringComparer.Ordinal))
            {
                throw new ServiceStartException($"Argument {name} not allowed for service {request.Name}");
            }
            int existing = arguments.FindIndex(argument => argument.Key == name);
            if (existing >= 0)
            {
                arguments[existing] = new(name, values);
            }
            else
            {
                arguments.Add(new(name, values));
            }
        }
        foreach ((string name, _) in request.Environment)
        {
            if (!definition.AllowedEnvironment.Contains(name, StringComparer.Ordinal))
            {
                throw new ServiceStartException($"Environment variable {name} not allowed for service {request.Name}");
            }
            if (_config.ChildEnvironment.ContainsKey(name))
            {
                throw new ServiceStartException($"Environment variable {name} can't be overwritten");
            }
        }
        int port = request.PrimaryPort ?? throw new ServiceStartException($"{request.Name}: no port given");
        try
        {
            foreach (PrestartAction action in definition.PrestartActions)
            {
                PrestartActions.Check(action);
            }
            _variables["ports"] = request.Ports.Select(item => (object?)item).ToList();
            foreach (PrestartAction action in definition.PrestartActions)
            {
                object? result = await _prestart.RunAsync(action, _variables, stopping);
                if (action.Ref is { } reference)
                {
                    _variables[reference] = result;
                }
            }
            var argv = new List<string>(definition.Command);
            foreach ((string name, IReadOnlyList<string> values) in arguments)
            {
                argv.Add(name);
                argv.AddRange(values);
            }
            var environment = new List<KeyValuePair<string, string>>(request.Environment);
            foreach ((string name, string value) in definition.Environment)
            {
                environment.Add(new(TemplateFormatter.Interpolate(name, _variables), TemplateFormatter.Interpolate(value, _variables)));
            }
            return new ServiceLaunch
            {
                Source = source,
                Argv = argv.Select(part => TemplateFormatter.Interpolate(part, _variables)).ToList(),
                Environment = environment,
                ReadinessPorts = [port],
                StartTimeout = ServiceLaunch.AppStartTimeout,
            };
        }
        catch (Exception exception) when (exception is ServiceStartException or TemplateException)
        {
            throw new ServiceStartException($"service-def {Path.GetFileName(definition.Path)}: {exception.Message}");
        }
    }

    private async Task<string> LaunchAsync(string name, ServiceLaunch launch, CancellationToken stopping)
    {
        var environment = new Dictionary<string, string>(_config.ChildEnvironment, StringComparer.Ordinal);
        foreach ((string key, string value) in launch.Environment)
        {
            environment[key] = value;
        }
        if (environment.TryGetValue("LD_LIBRARY_PATH", out string? libraryPath))
        {
            // Backend.AI's own libraries must not leak into the image's programs.
            environment["LD_LIBRARY_PATH"] = libraryPath.Replace("/opt/backend.ai/lib:", "", StringComparison.Ordinal);
        }
        ChildProcess process;
        try
        {
            process = ProcessSpawner.Start(new ProcessStartSpec
            {
                Executable = launch.Argv[0],
                Arguments = launch.Argv,
                Environment = environment,
                WorkingDirectory = Directory.Exists(_config.WorkDir) ? _config.WorkDir : null,
            });
        }
        catch (IOException exception)
        {
            return Failed(name, exception.Message);
        }
        var service = new RunningService(name, process);
        Log.Info($"service '{name}' started from {launch.Source} (pid {process.Pid}), waiting for port(s) {string.Join(",", launch.ReadinessPorts)}");
        Log.Debug($"service '{name}' argv: {string.Join(" ", launch.Argv)}");
        string? failure = await WaitUntilListeningAsync(service, launch, stopping);
        if (failure is not null)
        {
            await process.TerminateAsync(TimeSpan.FromSeconds(3));
            return Failed(name, failure);
        }
        lock (_services)
        {
            _services[name] = service;
        }
        return Result("started");
    }

    private static async Task<string?> WaitUntilListeningAsync(RunningService service, ServiceLaunch launch, CancellationToken stopping)
    {
        DateTime deadline = DateTime.UtcNow + launch.StartTimeout;
        var pending = new List<int>(launch.ReadinessPorts);
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
                return $"opening the service port timed out: {service.Name} (not listening on port(s) {string.Join(",", pending)} after {launch.StartTimeout.TotalSeconds:0} s)";
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

    /// <summary>A directory of the runner's own (host keys, generated config, temp files), removed when the runner stops.</summary>
    private string StateDirectory()
    {
        lock (_stateGate)
        {
            if (_stateDirectory is null)
            {
                _stateDirectory = Directory.CreateTempSubdirectory("kata-runner-services-").FullName;
                Log.Info($"service files (host keys, generated config, temp files) in {_stateDirectory}");
            }
            return _stateDirectory;
        }
    }

    private void DeleteStateDirectory()
    {
        string? directory;
        lock (_stateGate)
        {
            directory = _stateDirectory;
            _stateDirectory = null;
        }
        if (directory is null)
        {
            return;
        }
        try
        {
            Directory.Delete(directory, recursive: true);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            Log.Warn($"cannot remove {directory}: {exception.Message}");
        }
    }

    private static string Failed(ServiceRequest request, string error) => Failed(request.Name, error);

    private static string Failed(string name, string error)
    {
        Log.Warn($"failed to start service '{name}': {error}");
        return Result("failed", error);
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

        public RunningService(string name, ChildProcess process)
        {
            Name = name;
            Process = process;
            // Keeps the service's pipes drained (so it never blocks on output) and remembers the last
            // few KiB to explain a failed start.
            Pump = new PipePump($"service-{name}", [process.StdoutFd, process.StderrFd], (_, data) => Remember(data), process.Exited);
        }

        public string Name { get; }
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
