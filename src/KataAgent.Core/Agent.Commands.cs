using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using KataAgent.Core.Commands;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core;

/// <summary>
/// Commands beyond the interpreter (docs/COMMANDS.md): any program run in a session through its runner, as the session
/// user, with stdin, an optional PTY, signals and its own exit. A command runs until it exits whoever reads it
/// (background); its exit and unread recent output stay retrievable by id. While one runs the session is not idle.
/// </summary>
public sealed partial class Agent
{
    private readonly ConditionalWeakTable<Session, SessionCommands> _commandsBySession = [];

    /// <summary>Starts a command; then read it with <see cref="ReadCommandAsync"/> (or let it run in the background).</summary>
    public async Task<CommandStarted> StartCommandAsync(string kernelId, CommandRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var session = UsableSessionForCommands(kernelId);
        var spec = ToSpec(request);
        var commands = _commandsBySession.GetValue(session, _ => new SessionCommands());
        if (commands.IsRunning(spec.Id))
            throw new SessionRequestException($"session {kernelId}: a command with id '{spec.Id}' is already running");
        RunnerCommand command;
        try
        {
            command = await session.Runner.StartCommandAsync(spec, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (CommandRejectedException e)
        {
            throw new SessionRequestException($"session {kernelId}: command '{spec.Id}' refused by the runner: {e.Message}");
        }
        session.BeginRun();
        var display = spec.Shell ?? string.Join(' ', spec.Arguments!);
        commands.Add(new SessionCommands.Entry(command, display, DateTimeOffset.UtcNow));
        _logger.LogInformation("session {KernelId}: command {CommandId} started (pid {Pid}): {Command}", kernelId, spec.Id, command.Pid, display);
        _ = command.Exited.ContinueWith(exited =>
        {
            session.EndRun();
            commands.MarkEnded(command.Id);
            _logger.LogInformation("session {KernelId}: command {CommandId} ended: exit {ExitCode}, signal {Signal}{Error}", kernelId, command.Id,
                exited.Result.ExitCode, exited.Result.Signal, exited.Result.Error is { } error ? $" ({error})" : "");
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return new CommandStarted(command.Id, command.Pid);
    }

    /// <summary>
    /// Starts a command and yields <see cref="CommandStarted"/>, its output and its <see cref="CommandExit"/>. Stopping
    /// early (cancel) leaves it running: read on with <see cref="ReadCommandAsync"/> by its id.
    /// </summary>
    public async IAsyncEnumerable<CommandEvent> RunCommandAsync(string kernelId, CommandRequest request,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var started = await StartCommandAsync(kernelId, request, cancellationToken).ConfigureAwait(false);
        yield return started;
        await foreach (var item in ReadCommandAsync(kernelId, started.Id, cancellationToken).ConfigureAwait(false))
            yield return item;
    }

    /// <summary>
    /// The command's unread output (at most the recent <see cref="KernelRunnerClient.DefaultCommandBufferBytes"/>), then
    /// what follows, ending with its exit. When the session ends meanwhile: <see cref="SessionEndedDuringRunException"/>.
    /// </summary>
    public async IAsyncEnumerable<CommandEvent> ReadCommandAsync(string kernelId, string commandId,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var session = GetSession(kernelId);
        var entry = FindCommand(session, commandId);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, session.EndingToken);
        var events = entry.Command.ReadEventsAsync(stop.Token).GetAsyncEnumerator(stop.Token);
        await using var disposeEvents = events.ConfigureAwait(false);
        while (true)
        {
            bool more;
            try
            {
                more = await events.MoveNextAsync().ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && session.EndingToken.IsCancellationRequested)
            {
                throw new SessionEndedDuringRunException(kernelId, commandId, await WaitForEndReasonAsync(session, cancellationToken).ConfigureAwait(false)
                    ?? new SessionEndReason(SessionEndKind.Destroyed, DateTimeOffset.UtcNow));
            }
            if (!more)
                yield break;
            if (events.Current is CommandExit { Error: not null } && await WaitForEndReasonAsync(session, cancellationToken).ConfigureAwait(false) is { } reason)
                throw new SessionEndedDuringRunException(kernelId, commandId, reason);
            yield return events.Current;
        }
    }

    /// <summary>Waits for the command's end (its output stays unread for a reader).</summary>
    public async Task<CommandExit> WaitCommandAsync(string kernelId, string commandId, CancellationToken cancellationToken = default)
    {
        var session = GetSession(kernelId);
        var entry = FindCommand(session, commandId);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, session.EndingToken);
        CommandExit exit;
        try
        {
            exit = await entry.Command.Exited.WaitAsync(stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            exit = new CommandExit(null, null, "the session ended");
        }
        if (exit.Error is not null && await WaitForEndReasonAsync(session, cancellationToken).ConfigureAwait(false) is { } reason)
            throw new SessionEndedDuringRunException(kernelId, commandId, reason);
        return exit;
    }

    /// <summary>Bytes for the command's stdin (or its terminal); <paramref name="endOfInput"/> closes it after them.</summary>
    public async Task SendCommandInputAsync(string kernelId, string commandId, ReadOnlyMemory<byte> data, bool endOfInput,
        CancellationToken cancellationToken = default)
    {
        var (session, _) = RunningCommand(kernelId, commandId);
        if (!data.IsEmpty)
            await session.Runner.SendCommandInputAsync(commandId, data, cancellationToken).ConfigureAwait(false);
        if (endOfInput)
            await session.Runner.CloseCommandInputAsync(commandId, cancellationToken).ConfigureAwait(false);
        session.Touch(DateTimeOffset.UtcNow);
    }

    public Task ResizeCommandAsync(string kernelId, string commandId, TerminalSize size, CancellationToken cancellationToken = default)
    {
        var (session, entry) = RunningCommand(kernelId, commandId);
        if (!entry.Command.Terminal)
            throw new SessionRequestException($"session {kernelId}: command '{commandId}' has no terminal to resize (start it with a PTY)");
        if (size.Columns is < 1 or > 1000 || size.Rows is < 1 or > 1000)
            throw new SessionRequestException($"a terminal size needs columns and rows from 1 to 1000 (got {size.Columns}x{size.Rows})");
        return session.Runner.ResizeCommandAsync(commandId, size, cancellationToken);
    }

    /// <summary>Sends a signal ("TERM", "SIGKILL", "9") to the command's process group.</summary>
    public Task SignalCommandAsync(string kernelId, string commandId, string signal, CancellationToken cancellationToken = default)
    {
        int number;
        try
        {
            number = CommandSignals.Parse(signal);
        }
        catch (ArgumentException e)
        {
            throw new SessionRequestException(e.Message.Split(" (Parameter", 2)[0]);
        }
        var (session, _) = RunningCommand(kernelId, commandId);
        return session.Runner.SignalCommandAsync(commandId, number, cancellationToken);
    }

    /// <summary>The session's running commands and those that ended recently, oldest start first.</summary>
    public IReadOnlyList<SessionCommandInfo> ListCommands(string kernelId)
    {
        var session = GetSession(kernelId);
        return !_commandsBySession.TryGetValue(session, out var commands) ? []
            : commands.All().Select(entry => new SessionCommandInfo(kernelId, entry.Command.Id, entry.Command.Pid, entry.Command.Terminal,
                entry.Display, entry.StartedAt, entry.Command.Exited.IsCompletedSuccessfully ? entry.Command.Exited.Result : null,
                entry.Command.BufferedBytes)).ToList();
    }

    private Session UsableSessionForCommands(string kernelId)
    {
        var session = GetSession(kernelId);
        if (session.EndReason is { } ended)
            throw new SessionEndedException(session.ToTombstone(ended));
        RefuseIfPaused(session);
        return session;
    }

    private SessionCommands.Entry FindCommand(Session session, string commandId) =>
        _commandsBySession.TryGetValue(session, out var commands) && commands.Find(commandId) is { } entry ? entry
            : throw new CommandNotFoundException(session.KernelId, commandId);

    private (Session Session, SessionCommands.Entry Entry) RunningCommand(string kernelId, string commandId)
    {
        var session = UsableSessionForCommands(kernelId);
        var entry = FindCommand(session, commandId);
        if (entry.Command.Exited.IsCompleted)
            throw new SessionRequestException($"session {kernelId}: command '{commandId}' has already ended");
        return (session, entry);
    }

    private static CommandSpec ToSpec(CommandRequest request)
    {
        var id = request.Id ?? "cmd-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
        if (id.Length is 0 or > 64 || !id.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
            throw new SessionRequestException($"command id '{id}' is not valid: use 1 to 64 letters, digits, '.', '_' or '-'");
        var hasArguments = request.Arguments is not null;
        var hasShell = request.Shell is not null;
        if (hasArguments == hasShell)
            throw new SessionRequestException("a command needs exactly one of an argv (program and arguments) and a shell string");
        if (hasArguments && (request.Arguments!.Count == 0 || string.IsNullOrEmpty(request.Arguments[0])))
            throw new SessionRequestException("the command's argv is empty: it needs at least the program to run");
        if (hasShell && string.IsNullOrWhiteSpace(request.Shell))
            throw new SessionRequestException("the command's shell string is empty");
        if (request.Terminal is { } size && (size.Columns is < 1 or > 1000 || size.Rows is < 1 or > 1000))
            throw new SessionRequestException($"a terminal size needs columns and rows from 1 to 1000 (got {size.Columns}x{size.Rows})");
        foreach (var name in request.Environment?.Keys ?? [])
        {
            if (name.Length == 0 || name.Contains('=', StringComparison.Ordinal) || name.Contains('\0', StringComparison.Ordinal))
                throw new SessionRequestException($"environment variable name '{name}' is not valid");
        }
        return new CommandSpec
        {
            Id = id,
            Arguments = request.Arguments,
            Shell = request.Shell,
            Environment = request.Environment,
            WorkingDirectory = request.WorkingDirectory,
            Terminal = request.Terminal,
            Stdin = request.Stdin,
        };
    }
}
