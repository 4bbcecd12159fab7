using System.Text;
using System.Text.Json;

namespace KataAgent.Runner.Protocol;

/// <summary>The `cmd-*` messages (see the runner's README, "Commands"): programs run next to the interpreter.</summary>
public sealed partial class KernelRunnerClient
{
    /// <summary>Unread output kept per command (the rest is dropped oldest first, and counted).</summary>
    public const long DefaultCommandBufferBytes = 4L * 1024 * 1024;

    private readonly Dictionary<string, RunnerCommand> _commands = new(StringComparer.Ordinal);

    /// <summary>
    /// Sends `cmd-start` and waits for `cmd-started`. The command then runs until it exits, whoever reads it;
    /// <see cref="CommandRejectedException"/> when the runner refuses it (bad request, too many commands, not found).
    /// </summary>
    public async Task<RunnerCommand> StartCommandAsync(CommandSpec spec, long maxBufferedBytes = DefaultCommandBufferBytes,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var command = new RunnerCommand(spec.Id, spec.Terminal is not null, maxBufferedBytes);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_commands.ContainsKey(spec.Id))
            {
                throw new CommandRejectedException($"a command with id '{spec.Id}' is already running in this session");
            }
            _commands[spec.Id] = command;
        }
        try
        {
            await SendAsync(RunnerMessageTypes.CommandStart, SerializeStart(spec), cancellationToken).ConfigureAwait(false);
            command.Pid = await command.Started.Task.WaitAsync(_options.ReplyTimeout, cancellationToken).ConfigureAwait(false);
            return command;
        }
        catch (Exception exception)
        {
            lock (_gate)
            {
                if (_commands.TryGetValue(spec.Id, out RunnerCommand? registered) && ReferenceEquals(registered, command))
                {
                    _commands.Remove(spec.Id);
                }
            }
            if (exception is TimeoutException)
            {
                throw new TimeoutException($"the kernel runner did not answer cmd-start within {_options.ReplyTimeout.TotalSeconds:0.#} s");
            }
            throw;
        }
    }

    /// <summary>A command started by this client that has not ended yet.</summary>
    public RunnerCommand? FindCommand(string id)
    {
        lock (_gate)
        {
            return _commands.GetValueOrDefault(id);
        }
    }

    /// <summary>Sends bytes to the command's stdin (or types them on its terminal).</summary>
    public Task SendCommandInputAsync(string id, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        byte[] header = Encoding.ASCII.GetBytes(id + "\n");
        byte[] payload = new byte[header.Length + data.Length];
        header.CopyTo(payload, 0);
        data.Span.CopyTo(payload.AsSpan(header.Length));
        return SendAsync(RunnerMessageTypes.CommandStdin, payload, cancellationToken);
    }

    /// <summary>End of input: closes the stdin pipe; on a terminal, types the EOF character (^D).</summary>
    public Task CloseCommandInputAsync(string id, CancellationToken cancellationToken = default) =>
        SendAsync(RunnerMessageTypes.CommandStdinClose, Json(writer => writer.WriteString("id", id)), cancellationToken);

    /// <summary>Resizes the command's terminal (its foreground process group gets SIGWINCH).</summary>
    public Task ResizeCommandAsync(string id, TerminalSize size, CancellationToken cancellationToken = default) =>
        SendAsync(RunnerMessageTypes.CommandResize, Json(writer =>
        {
            writer.WriteString("id", id);
            writer.WriteNumber("cols", size.Columns);
            writer.WriteNumber("rows", size.Rows);
        }), cancellationToken);

    /// <summary>Sends the signal to the command's process group.</summary>
    public Task SignalCommandAsync(string id, int signal, CancellationToken cancellationToken = default) =>
        SendAsync(RunnerMessageTypes.CommandSignal, Json(writer =>
        {
            writer.WriteString("id", id);
            writer.WriteNumber("signal", signal);
        }), cancellationToken);

    /// <summary>The commands the runner has running (`cmd-list`), whoever started them.</summary>
    public async Task<IReadOnlyList<RunnerCommandInfo>> ListRunnerCommandsAsync(CancellationToken cancellationToken = default)
    {
        byte[] answer = await RequestAsync(RunnerMessageTypes.CommandList, [], RunnerMessageTypes.CommandListResult, _options.ReplyTimeout,
            cancellationToken).ConfigureAwait(false);
        using JsonDocument document = JsonDocument.Parse(answer);
        return document.RootElement.TryGetProperty("commands", out JsonElement commands) && commands.ValueKind == JsonValueKind.Array
            ? commands.EnumerateArray().Select(item => new RunnerCommandInfo(item.GetProperty("id").GetString() ?? "",
                item.GetProperty("pid").GetInt32(), item.TryGetProperty("pty", out JsonElement pty) && pty.ValueKind == JsonValueKind.True)).ToList()
            : [];
    }

    private static byte[] SerializeStart(CommandSpec spec) => Json(writer =>
    {
        writer.WriteString("id", spec.Id);
        if (spec.Arguments is not null)
        {
            writer.WriteStartArray("argv");
            foreach (string argument in spec.Arguments)
            {
                writer.WriteStringValue(argument);
            }
            writer.WriteEndArray();
        }
        if (spec.Shell is not null)
        {
            writer.WriteString("shell", spec.Shell);
        }
        if (spec.Environment is { Count: > 0 } environment)
        {
            writer.WriteStartObject("env");
            foreach ((string name, string value) in environment)
            {
                writer.WriteString(name, value);
            }
            writer.WriteEndObject();
        }
        if (spec.WorkingDirectory is not null)
        {
            writer.WriteString("cwd", spec.WorkingDirectory);
        }
        if (spec.Terminal is TerminalSize size)
        {
            writer.WriteStartObject("pty");
            writer.WriteNumber("cols", size.Columns);
            writer.WriteNumber("rows", size.Rows);
            writer.WriteEndObject();
        }
        writer.WriteBoolean("stdin", spec.Stdin);
    });

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

    // ---- poller thread ----

    private void AcceptCommandMessage(RunnerMessage message)
    {
        try
        {
            switch (message.Type)
            {
                case RunnerMessageTypes.CommandOutput:
                    AcceptCommandOutput(message.Payload);
                    break;
                case RunnerMessageTypes.CommandStarted:
                    AcceptCommandStarted(message.Payload);
                    break;
                case RunnerMessageTypes.CommandExit:
                    AcceptCommandExit(message.Payload);
                    break;
                default:
                    Interlocked.Increment(ref _ignoredMessages);
                    break;
            }
        }
        catch (Exception exception) when (exception is JsonException or InvalidOperationException or KeyNotFoundException)
        {
            // Malformed (the runner lives in the guest): dropped like other garbage, runs are not disturbed.
            Interlocked.Increment(ref _ignoredMessages);
        }
    }

    /// <summary>`ID\nSTREAM\n` then the bytes.</summary>
    private void AcceptCommandOutput(byte[] payload)
    {
        int idEnd = Array.IndexOf(payload, (byte)'\n');
        int streamEnd = idEnd < 0 ? -1 : Array.IndexOf(payload, (byte)'\n', idEnd + 1);
        RunnerCommand? command = streamEnd < 0 ? null : FindCommand(Encoding.ASCII.GetString(payload, 0, idEnd));
        string stream = streamEnd < 0 ? "" : Encoding.ASCII.GetString(payload, idEnd + 1, streamEnd - idEnd - 1);
        if (command is null || stream is not ("stdout" or "stderr" or "pty"))
        {
            Interlocked.Increment(ref _ignoredMessages);
            return;
        }
        command.Append(stream, payload[(streamEnd + 1)..]);
    }

    private void AcceptCommandStarted(byte[] payload)
    {
        using JsonDocument document = JsonDocument.Parse(payload);
        JsonElement root = document.RootElement;
        string id = root.TryGetProperty("id", out JsonElement idElement) ? idElement.GetString() ?? "" : "";
        RunnerCommand? command = FindCommand(id);
        if (command is null)
        {
            Interlocked.Increment(ref _ignoredMessages);
            return;
        }
        if (root.TryGetProperty("error", out JsonElement error))
        {
            lock (_gate)
            {
                _commands.Remove(id);
            }
            command.Started.TrySetException(new CommandRejectedException(error.GetString() ?? "the runner refused the command"));
            return;
        }
        command.Started.TrySetResult(root.TryGetProperty("pid", out JsonElement pid) && pid.ValueKind == JsonValueKind.Number
            && pid.TryGetInt32(out int number) ? number : 0);
    }

    private void AcceptCommandExit(byte[] payload)
    {
        using JsonDocument document = JsonDocument.Parse(payload);
        JsonElement root = document.RootElement;
        string id = root.TryGetProperty("id", out JsonElement idElement) ? idElement.GetString() ?? "" : "";
        RunnerCommand? command;
        lock (_gate)
        {
            _commands.Remove(id, out command);
        }
        if (command is null)
        {
            Interlocked.Increment(ref _ignoredMessages);
            return;
        }
        int? exitCode = root.TryGetProperty("exitCode", out JsonElement code) && code.ValueKind == JsonValueKind.Number
            && code.TryGetInt32(out int value) ? value : null;
        int? signal = root.TryGetProperty("signal", out JsonElement signalElement) && signalElement.ValueKind == JsonValueKind.Number
            && signalElement.TryGetInt32(out int number) ? number : null;
        command.Started.TrySetResult(command.Pid);
        command.Finish(new CommandExit(exitCode, signal));
    }

    /// <summary>The runner went away (or this client did): its commands are gone with it.</summary>
    private void EndAllCommands(string reason)
    {
        List<RunnerCommand> commands;
        lock (_gate)
        {
            commands = [.. _commands.Values];
            _commands.Clear();
        }
        foreach (RunnerCommand command in commands)
        {
            command.Finish(new CommandExit(null, null, reason));
        }
    }
}
