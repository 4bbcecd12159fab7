using System.Text;
using System.Text.Json;
using KataAgent.Runner.Transport;

namespace KataAgent.Runner.Commands;

/// <summary>
/// The `cmd-*` operations (our extension, see README "Commands"): any program started in the session next to the
/// interpreter, each in its own process group, with stdin, an optional pseudo-terminal and signals. Handle runs on
/// the receive thread and never blocks.
/// </summary>
internal sealed class CommandManager
{
    public const string Prefix = "cmd-";
    public const string OutputType = "cmd-output";
    public const string ExitType = "cmd-exit";
    public const string StartedType = "cmd-started";
    public const string ListResultType = "cmd-list-result";

    /// <summary>Commands running at once; a start beyond it is refused.</summary>
    public const int MaxRunningCommands = 32;

    private readonly RunnerConfig _config;
    private readonly AgentLink _link;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, RunningCommand> _running = new(StringComparer.Ordinal);

    public CommandManager(RunnerConfig config, AgentLink link)
    {
        _config = config;
        _link = link;
    }

    public void Handle(AgentMessage message)
    {
        switch (message.Type)
        {
            case "cmd-start":
                Start(message.Payload);
                break;
            case "cmd-stdin":
                WriteStdin(message.Payload);
                break;
            case "cmd-stdin-close":
                Find(message.Payload, "cmd-stdin-close")?.CloseStdin();
                break;
            case "cmd-resize":
                Resize(message.Payload);
                break;
            case "cmd-signal":
                Signal(message.Payload);
                break;
            case "cmd-list":
                _link.SendReply(ListResultType, DescribeRunning());
                break;
            default:
                Log.Warn($"ignored unknown command message '{message.Type}'");
                break;
        }
    }

    /// <summary>SIGTERM to every command's process group, SIGKILL after <paramref name="grace"/>.</summary>
    public Task StopAllAsync(TimeSpan grace)
    {
        List<RunningCommand> running;
        lock (_gate)
        {
            running = [.. _running.Values];
        }
        return Task.WhenAll(running.Select(command => command.TerminateAsync(grace)));
    }

    private void Start(byte[] payload)
    {
        string id = CommandStartRequest.TryReadId(payload);
        try
        {
            CommandStartRequest request = CommandStartRequest.Parse(payload);
            string workingDirectory = ResolveWorkingDirectory(request.WorkingDirectory);
            var environment = new Dictionary<string, string>(_config.ChildEnvironment, StringComparer.Ordinal);
            foreach ((string name, string value) in request.Environment)
            {
                environment[name] = value;
            }
            RunningCommand command;
            lock (_gate)
            {
                if (_running.ContainsKey(request.Id))
                {
                    throw new InvalidOperationException($"a command with id '{request.Id}' is already running");
                }
                if (_running.Count >= MaxRunningCommands)
                {
                    throw new InvalidOperationException($"{_running.Count} commands already run in this session (at most {MaxRunningCommands})");
                }
                command = RunningCommand.Start(request, environment, workingDirectory, _link);
                _running[request.Id] = command;
            }
            _ = command.Completion.ContinueWith(_ =>
            {
                lock (_gate)
                {
                    _running.Remove(command.Id);
                }
            }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            Log.Info($"command {command.Id} started (pid {command.Pid}{(command.IsTerminal ? ", pty" : "")})");
            _link.SendReply(StartedType, Json(writer =>
            {
                writer.WriteString("id", command.Id);
                writer.WriteNumber("pid", command.Pid);
            }));
        }
        catch (Exception exception) when (exception is FormatException or InvalidOperationException or IOException
            or UnauthorizedAccessException)
        {
            Log.Warn($"cmd-start refused: {exception.Message}");
            _link.SendReply(StartedType, Json(writer =>
            {
                writer.WriteString("id", id);
                writer.WriteString("error", exception.Message);
            }));
        }
    }

    private string ResolveWorkingDirectory(string? requested)
    {
        string workDir = _config.WorkDir;
        if (requested is null)
        {
            return Directory.Exists(workDir) ? workDir : "/";
        }
        string path = Path.IsPathRooted(requested) ? requested : Path.Combine(workDir, requested);
        return Directory.Exists(path) ? path : throw new IOException($"the working directory {path} does not exist");
    }

    /// <summary>`ID\n` then the bytes.</summary>
    private void WriteStdin(byte[] payload)
    {
        int newline = Array.IndexOf(payload, (byte)'\n');
        if (newline <= 0)
        {
            Log.Warn("ignored cmd-stdin without an id line");
            return;
        }
        string id = Encoding.ASCII.GetString(payload, 0, newline);
        RunningCommand? command = Lookup(id, "cmd-stdin");
        if (command is not null && !command.WriteStdin(payload[(newline + 1)..]))
        {
            Log.Warn($"command {id}: stdin dropped ({payload.Length - newline - 1} bytes): input was closed or more than "
                + $"{RunningCommand.MaxPendingStdinBytes} bytes wait for the program to read them");
        }
    }

    private void Resize(byte[] payload)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(payload);
            (ushort columns, ushort rows) = CommandStartRequest.ReadSize(document.RootElement, "cmd-resize");
            RunningCommand? command = Find(payload, "cmd-resize");
            if (command is not null && !command.Resize(columns, rows))
            {
                Log.Warn($"command {command.Id} has no terminal to resize");
            }
        }
        catch (Exception exception) when (exception is JsonException or FormatException)
        {
            Log.Warn($"ignored cmd-resize: {exception.Message}");
        }
    }

    private void Signal(byte[] payload)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(payload);
            if (!document.RootElement.TryGetProperty("signal", out JsonElement signalElement) || !signalElement.TryGetInt32(out int signal)
                || signal is < 1 or > 64)
            {
                Log.Warn("ignored cmd-signal without a signal number from 1 to 64");
                return;
            }
            Find(payload, "cmd-signal")?.Signal(signal);
        }
        catch (JsonException exception)
        {
            Log.Warn($"ignored cmd-signal: {exception.Message}");
        }
    }

    private RunningCommand? Find(byte[] payload, string what) => Lookup(CommandStartRequest.TryReadId(payload), what);

    private RunningCommand? Lookup(string id, string what)
    {
        lock (_gate)
        {
            if (_running.TryGetValue(id, out RunningCommand? command))
            {
                return command;
            }
        }
        Log.Warn($"ignored {what} for '{(id.Length > 64 ? id[..64] : id)}': no such command is running");
        return null;
    }

    private byte[] DescribeRunning()
    {
        List<RunningCommand> running;
        lock (_gate)
        {
            running = [.. _running.Values];
        }
        return Json(writer =>
        {
            writer.WriteStartArray("commands");
            foreach (RunningCommand command in running.OrderBy(command => command.Id, StringComparer.Ordinal))
            {
                writer.WriteStartObject();
                writer.WriteString("id", command.Id);
                writer.WriteNumber("pid", command.Pid);
                writer.WriteBoolean("pty", command.IsTerminal);
                writer.WriteEndObject();
            }
            writer.WriteEndArray();
        });
    }

    private static byte[] Json(Action<Utf8JsonWriter> write)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            write(writer);
            writer.WriteEndObject();
        }
        return buffer.ToArray();
    }
}
