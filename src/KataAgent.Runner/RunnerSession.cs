using System.Diagnostics;
using System.Text.Json;
using KataAgent.Runner.Commands;
using KataAgent.Runner.Execution;
using KataAgent.Runner.Native;
using KataAgent.Runner.Services;
using KataAgent.Runner.Transport;

namespace KataAgent.Runner;

/// <summary>Routes every protocol operation from the agent. Runs on the receive thread: nothing here may block.</summary>
internal sealed class RunnerSession : IDisposable
{
    private readonly RunnerConfig _config;
    private readonly AgentLink _link;
    private readonly PythonInterpreter? _interpreter;
    private readonly RunWorker _worker;
    private readonly ServiceManager _services;
    private readonly UserInputServer _inputServer;
    private readonly CommandManager _commands;
    private readonly CancellationToken _stopping;
    private readonly Stopwatch _uptime = Stopwatch.StartNew();

    public RunnerSession(RunnerConfig config, AgentLink link, CancellationToken stopping)
    {
        _config = config;
        _link = link;
        _stopping = stopping;
        _interpreter = config.HasInterpreter ? new PythonInterpreter(config, link) : null;
        _inputServer = new UserInputServer(config.UserInputSocket, link, stopping);
        _worker = new RunWorker(config, link, _interpreter, _inputServer);
        _services = new ServiceManager(config);
        _commands = new CommandManager(config, link);
    }

    public Task RunAsync() => _worker.RunAsync(_stopping);

    public void Dispose()
    {
        _services.Dispose();
        _inputServer.Dispose();
    }

    public async Task StopAsync(TimeSpan grace)
    {
        await Task.WhenAll(_services.StopAllAsync(grace), _worker.StopAsync(grace), _commands.StopAllAsync(grace));
    }

    public void Handle(AgentMessage message)
    {
        Log.Debug($"received {message.Type} ({message.Payload.Length} bytes)");
        switch (message.Type)
        {
            case "code" or "clean" or "build" or "exec":
                _link.Journal?.Queue(message.Type);
                _worker.Enqueue(message);
                break;
            case "run-label" when _link.Journal is not null:
                _link.Journal.SetNextLabel(message.PayloadText);
                break;
            case "replay" when _link.Journal is not null:
                if (RunJournal.ReadReplayFrom(message.Payload) is long from)
                {
                    _link.RequestReplay(from);
                }
                else
                {
                    Log.Warn("ignored a replay request without a numeric 'from'");
                }
                break;
            case "runs" when _link.Journal is not null:
                _link.SendReply("runs-result", _link.Journal.DescribeRuns());
                break;
            case "input":
                _worker.Current?.SendInput(message.PayloadText);
                break;
            case "interrupt":
                _worker.Current?.Interrupt();
                break;
            case "complete":
                if (_interpreter is null || !_interpreter.TryRequestCompletion(message.Payload))
                {
                    // Busy or no interpreter: answer at once rather than leave the agent waiting.
                    _link.SendReply("completion", "{\"suggestions\": []}");
                }
                break;
            case "status":
                // Backend.AI's agent takes the status reply as "start-up is done": hold it until then.
                if (_worker.Started.IsCompletedSuccessfully)
                {
                    _link.SendReply("status", DescribeStatus(_worker.Started.Result));
                }
                else
                {
                    _ = _worker.Started.ContinueWith(started => _link.SendReply("status", DescribeStatus(started.Result)),
                        CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
                }
                break;
            case "start-service":
                string request = message.PayloadText;
                _ = Task.Run(async () => _link.SendReply("service-result", await _services.StartAsync(request, _stopping)), _stopping);
                break;
            case "shutdown-service":
                string name = ReadServiceName(message.PayloadText);
                _ = Task.Run(() => _services.StopAsync(name), _stopping);
                break;
            case "get-apps":
                // The payload is a service-name filter ("" = all); the definitions are files, read off this thread.
                string filter = message.PayloadText.Trim();
                _ = Task.Run(async () => _link.SendReply("apps-result", await _services.DescribeAppsAsync(filter, _stopping)), _stopping);
                break;
            case "personalise":
                Personalise(message.PayloadText);
                break;
            case "event":
                Log.Info($"event from the agent: {Truncate(message.PayloadText, 200)}");
                if (ReadEventType(message.PayloadText) == "oom")
                {
                    _ = Task.Run(ProcessTreeLog.LogOutOfMemory, _stopping);
                }
                break;
            case string type when type.StartsWith(CommandManager.Prefix, StringComparison.Ordinal):
                _commands.Handle(message);
                break;
            default:
                Log.Warn($"ignored unknown message type '{Truncate(message.Type, 40)}'");
                break;
        }
    }

    /// <summary>
    /// `personalise` (pool members): {"environ": {"NAME": "value", ...}}. Answered with `personalised`
    /// {"ok": true} once the bootstrap script has run, or {"ok": false, "error": "..."} at once.
    /// </summary>
    private void Personalise(string payload)
    {
        string? refusal;
        List<(string Key, string Value)> environ = [];
        try
        {
            using JsonDocument document = JsonDocument.Parse(payload);
            refusal = ReadEnviron(document.RootElement, environ);
        }
        catch (JsonException exception)
        {
            refusal = $"the personalise payload is not JSON: {exception.Message}";
        }
        refusal ??= _worker.TryPersonalise(environ);
        if (refusal is not null)
        {
            Log.Warn($"personalise refused: {refusal}");
            _link.SendReply("personalised", PersonaliseReply(refusal));
            return;
        }
        Log.Info($"personalised: {environ.Count} environment variable(s)");
        _ = _worker.Personalised.ContinueWith(
            _ => _link.SendReply("personalised", PersonaliseReply(null)),
            CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
    }

    private static byte[] PersonaliseReply(string? refusal)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteBoolean("ok", refusal is null);
            if (refusal is not null)
            {
                writer.WriteString("error", refusal);
            }
            writer.WriteEndObject();
        }
        return buffer.ToArray();
    }

    private static string? ReadEnviron(JsonElement root, List<(string Key, string Value)> environ)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            return "the personalise payload must be a JSON object";
        }
        if (!root.TryGetProperty("environ", out JsonElement map))
        {
            return null;
        }
        if (map.ValueKind != JsonValueKind.Object)
        {
            return "\"environ\" must be an object of strings";
        }
        foreach (JsonProperty entry in map.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String || entry.Name.Length == 0 || entry.Name.Contains('=') || entry.Name.Contains('\0')
                || entry.Value.GetString()!.Contains('\0'))
            {
                return $"environment variable '{Truncate(entry.Name, 40)}' is not a NAME (no '=' or NUL) with a string value";
            }
            environ.Add((entry.Name, entry.Value.GetString()!));
        }
        return null;
    }

    private byte[] DescribeStatus(double startedAt)
    {
        bool busy = _worker.IsBusy;
        return new MessagePackMap()
            .Add("started_at", startedAt)
            .Add("status", _worker.IsBootstrapping ? "bootstrapping" : busy ? "busy" : "idle")
            .Add("started", !_worker.IsBootstrapping)
            .Add("runtime-type", _config.RuntimeType)
            .Add("queued-runs", _worker.QueuedRuns)
            .Add("services", _services.Count)
            .Add("pid", Libc.getpid())
            .Add("uptime-seconds", _uptime.Elapsed.TotalSeconds)
            // How the agent learns that this runner numbers its output (an older runner ignores the runner.json switch).
            .Add("sequenced-output", _link.Journal is not null)
            .Encode();
    }

    private static string? ReadEventType(string payload)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(payload);
            return document.RootElement.ValueKind == JsonValueKind.Object
                && document.RootElement.TryGetProperty("type", out JsonElement type) && type.ValueKind == JsonValueKind.String
                ? type.GetString() : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>The payload is a JSON string; a JSON object with "name" or bare text is accepted too.</summary>
    private static string ReadServiceName(string payload)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(payload);
            return document.RootElement.ValueKind switch
            {
                JsonValueKind.String => document.RootElement.GetString() ?? "",
                JsonValueKind.Object when document.RootElement.TryGetProperty("name", out JsonElement name) => name.GetString() ?? "",
                _ => payload,
            };
        }
        catch (JsonException)
        {
            return payload.Trim();
        }
    }

    private static string Truncate(string text, int length) => text.Length <= length ? text : text[..length] + "...";
}
