using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using KataAgent.Api.V1;
using KataAgent.Core.Commands;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging;
using ProtoOutput = KataAgent.Api.V1.CommandOutput;
using RunnerOutput = KataAgent.Runner.Protocol.CommandOutput;

namespace KataAgent.Api.Server;

/// <summary>The command rpcs (docs/COMMANDS.md).</summary>
public sealed partial class SessionsService
{
    public override async Task RunCommand(IAsyncStreamReader<CommandInput> requestStream, IServerStreamWriter<ProtoOutput> responseStream,
        ServerCallContext context)
    {
        if (!await requestStream.MoveNext(context.CancellationToken) || requestStream.Current.ActionCase != CommandInput.ActionOneofCase.Start)
            throw new ArgumentException("the first RunCommand message must be `start` (kernel_id and argv or shell)");
        var start = requestStream.Current.Start;
        var kernelId = RequireKernelId(start.KernelId);
        var started = await agent.StartCommandAsync(kernelId, new CommandRequest
        {
            Id = string.IsNullOrEmpty(start.CommandId) ? null : start.CommandId,
            Arguments = start.Argv.Count > 0 ? [.. start.Argv] : string.IsNullOrEmpty(start.Shell) ? [] : null,
            Shell = string.IsNullOrEmpty(start.Shell) ? null : start.Shell,
            Environment = start.Env.Count > 0 ? new Dictionary<string, string>(start.Env) : null,
            WorkingDirectory = string.IsNullOrEmpty(start.Cwd) ? null : start.Cwd,
            Terminal = start.Pty is { } pty ? new TerminalSize((int)pty.Cols, (int)pty.Rows) : null,
            Stdin = start.Stdin,
        }, context.CancellationToken);
        await responseStream.WriteAsync(new ProtoOutput { Started = new CommandStartedInfo { CommandId = started.Id, Pid = started.Pid } },
            context.CancellationToken);
        if (start.Background)
            return;
        using var done = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        var forwarding = ForwardCommandInputAsync(kernelId, started.Id, requestStream, done.Token);
        try
        {
            await foreach (var item in agent.ReadCommandAsync(kernelId, started.Id, context.CancellationToken))
            {
                if (ToProto(item) is { } output)
                    await responseStream.WriteAsync(output, context.CancellationToken);
            }
        }
        finally
        {
            await done.CancelAsync();
            try
            {
                await forwarding;
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or InvalidOperationException)
            {
                // The call or the command is over; nothing more to forward.
            }
        }
    }

    /// <summary>Stdin, resizes and signals from the caller; errors about one (a command that just ended) end the forwarding only.</summary>
    private async Task ForwardCommandInputAsync(string kernelId, string commandId, IAsyncStreamReader<CommandInput> requestStream,
        CancellationToken cancellationToken)
    {
        while (await requestStream.MoveNext(cancellationToken))
        {
            var input = requestStream.Current;
            try
            {
                switch (input.ActionCase)
                {
                    case CommandInput.ActionOneofCase.Stdin:
                        await agent.SendCommandInputAsync(kernelId, commandId, input.Stdin.Memory, endOfInput: false, cancellationToken);
                        break;
                    case CommandInput.ActionOneofCase.CloseStdin when input.CloseStdin:
                        await agent.SendCommandInputAsync(kernelId, commandId, ReadOnlyMemory<byte>.Empty, endOfInput: true, cancellationToken);
                        break;
                    case CommandInput.ActionOneofCase.Resize:
                        await agent.ResizeCommandAsync(kernelId, commandId, new TerminalSize((int)input.Resize.Cols, (int)input.Resize.Rows), cancellationToken);
                        break;
                    case CommandInput.ActionOneofCase.Signal:
                        await agent.SignalCommandAsync(kernelId, commandId, input.Signal, cancellationToken);
                        break;
                }
            }
            catch (Core.Sessions.SessionRequestException e)
            {
                logger.LogCommandInputRefused(kernelId, commandId, e.Message);
            }
        }
    }

    public override async Task AttachCommand(CommandRef request, IServerStreamWriter<ProtoOutput> responseStream, ServerCallContext context)
    {
        var kernelId = RequireKernelId(request.KernelId);
        await foreach (var item in agent.ReadCommandAsync(kernelId, request.CommandId, context.CancellationToken))
        {
            if (ToProto(item) is { } output)
                await responseStream.WriteAsync(output, context.CancellationToken);
        }
    }

    public override async Task<SignalCommandReply> SignalCommand(SignalCommandRequest request, ServerCallContext context)
    {
        await agent.SignalCommandAsync(RequireKernelId(request.KernelId), request.CommandId,
            string.IsNullOrEmpty(request.Signal) ? "TERM" : request.Signal, context.CancellationToken);
        return new SignalCommandReply();
    }

    public override Task<ListCommandsReply> ListCommands(SessionRef request, ServerCallContext context)
    {
        var reply = new ListCommandsReply();
        foreach (var info in agent.ListCommands(RequireKernelId(request.KernelId)))
        {
            reply.Commands.Add(new CommandInfo
            {
                CommandId = info.Id,
                Pid = info.Pid,
                Pty = info.Terminal,
                Command = info.Command,
                StartedAt = Timestamp.FromDateTimeOffset(info.StartedAt),
                Exit = info.Exit is { } exit ? ToProto(exit) : null,
                BufferedBytes = info.BufferedBytes,
            });
        }
        return Task.FromResult(reply);
    }

    public override async Task<CommandExitInfo> WaitCommand(CommandRef request, ServerCallContext context) =>
        ToProto(await agent.WaitCommandAsync(RequireKernelId(request.KernelId), request.CommandId, context.CancellationToken));

    private static ProtoOutput? ToProto(CommandEvent item) => item switch
    {
        RunnerOutput output => new ProtoOutput
        {
            Output = new CommandChunk { Stream = output.Stream, Data = ByteString.CopyFrom(output.Data), DroppedBefore = output.DroppedBefore },
        },
        CommandExit exit => new ProtoOutput { Exit = ToProto(exit) },
        _ => null,
    };

    private static CommandExitInfo ToProto(CommandExit exit)
    {
        var info = new CommandExitInfo { Error = exit.Error ?? "", ShellExitCode = exit.ShellExitCode };
        if (exit.ExitCode is int code)
            info.ExitCode = code;
        if (exit.Signal is int signal)
            info.Signal = signal;
        return info;
    }
}

internal static partial class CommandLog
{
    [LoggerMessage(Level = LogLevel.Information, Message = "session {KernelId}: input for command {CommandId} refused: {Reason}")]
    public static partial void LogCommandInputRefused(this ILogger logger, string kernelId, string commandId, string reason);
}
