using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Grpc.Core;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

// `session sh` (any command in a session, through its runner) and `session cmd ls|kill` (docs/COMMANDS.md).
internal static partial class SessionCommands
{
    private static Command ShellCommand()
    {
        var id = KernelIdArgument();
        var argv = new Argument<string[]>("COMMAND") { Description = "The program and its arguments (after --)", Arity = ArgumentArity.OneOrMore };
        var tty = new Option<bool>("--tty", "-t") { Description = "Run on a pseudo-terminal (raw mode and window size changes forwarded when this is a terminal)" };
        var interactive = new Option<bool>("--interactive", "-i") { Description = "Forward stdin even when it is a terminal (it is forwarded anyway when piped)" };
        var background = new Option<bool>("--background", "-d") { Description = "Start it and print its command id; it runs on (see: session cmd ls / kill)" };
        var env = new Option<string[]>("--env", "-e") { Description = "K=V added to the command's environment (repeatable)", AllowMultipleArgumentsPerToken = false };
        var cwd = new Option<string?>("--cwd") { Description = "Working directory (relative to the work dir)" };
        var commandId = new Option<string?>("--id") { Description = "The command id (default: made by the agent)" };
        var command = new Command("sh", """
            Run any command in a session, as the session user, through its runner. The CLI exits with the command's exit
            code (128 + N when signal N ended it).

            Examples:
              kata-agent session sh $id -- ls -la
              echo hello | kata-agent session sh $id -- cat
              kata-agent session sh $id --tty -- bash
              kata-agent session sh $id --background -- python3 -m http.server 8080
            """);
        command.Arguments.Add(id);
        command.Arguments.Add(argv);
        foreach (var option in new Option[] { tty, interactive, background, env, cwd, commandId })
            command.Options.Add(option);
        command.SetAction(async (parse, ct) =>
        {
            var useTty = parse.GetValue(tty);
            var forwardStdin = !parse.GetValue(background) && (parse.GetValue(interactive) || Console.IsInputRedirected || useTty);
            var start = new StartCommandRequest
            {
                KernelId = parse.GetValue(id)!,
                CommandId = parse.GetValue(commandId) ?? "",
                Cwd = parse.GetValue(cwd) ?? "",
                Stdin = forwardStdin,
                Background = parse.GetValue(background),
            };
            start.Argv.AddRange(parse.GetValue(argv)!);
            foreach (var pair in parse.GetValue(env) ?? [])
            {
                var equals = pair.IndexOf('=', StringComparison.Ordinal);
                if (equals <= 0)
                    throw new CliException($"--env: '{pair}' is not K=V", 2);
                start.Env[pair[..equals]] = pair[(equals + 1)..];
            }
            if (useTty)
                start.Pty = CurrentTerminalSize();
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            return await RunCommandAsync(connection.Client.Sessions, start, forwardStdin, useTty && !Console.IsInputRedirected, ct);
        });
        return command;
    }

    private static async Task<int> RunCommandAsync(Sessions.SessionsClient sessions, StartCommandRequest start, bool forwardStdin, bool rawTerminal,
        CancellationToken cancellationToken)
    {
        using var call = sessions.RunCommand(cancellationToken: cancellationToken);
        await call.RequestStream.WriteAsync(new CommandInput { Start = start }, cancellationToken);
        if (!await call.ResponseStream.MoveNext(cancellationToken) || call.ResponseStream.Current.EventCase != CommandOutput.EventOneofCase.Started)
            throw new CliException("the agent did not report the command started");
        var started = call.ResponseStream.Current.Started;
        if (start.Background)
        {
            Console.WriteLine(started.CommandId);
            await call.RequestStream.CompleteAsync();
            return 0;
        }
        // One writer at a time on the request stream: stdin and resizes take turns.
        using var writeGate = new SemaphoreSlim(1, 1);
        async Task SendAsync(CommandInput input)
        {
            await writeGate.WaitAsync(cancellationToken);
            try
            {
                await call.RequestStream.WriteAsync(input, cancellationToken);
            }
            finally
            {
                writeGate.Release();
            }
        }
        using var stopInput = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        string? savedTerminal = rawTerminal ? Stty("-g") : null;
        PosixSignalRegistration? onResize = null;
        try
        {
            if (savedTerminal is not null)
            {
                Stty("raw -echo");
                onResize = PosixSignalRegistration.Create(PosixSignal.SIGWINCH, context =>
                    _ = SendAsync(new CommandInput { Resize = CurrentTerminalSize() }).ContinueWith(t => _ = t.Exception, TaskScheduler.Default));
            }
            var forwarding = forwardStdin ? ForwardStdinAsync(SendAsync, stopInput.Token) : Task.CompletedTask;
            using var stdout = Console.OpenStandardOutput();
            using var stderr = Console.OpenStandardError();
            var exitCode = 1;
            while (await call.ResponseStream.MoveNext(cancellationToken))
            {
                var item = call.ResponseStream.Current;
                if (item.EventCase == CommandOutput.EventOneofCase.Output)
                {
                    var target = item.Output.Stream == "stderr" ? stderr : stdout;
                    if (item.Output.DroppedBefore > 0)
                        Output.Warn($"{item.Output.DroppedBefore} bytes of output were dropped (not read in time)");
                    await target.WriteAsync(item.Output.Data.Memory, cancellationToken);
                    await target.FlushAsync(cancellationToken);
                }
                else if (item.EventCase == CommandOutput.EventOneofCase.Exit)
                {
                    if (!string.IsNullOrEmpty(item.Exit.Error))
                        Output.Warn($"command {started.CommandId}: {item.Exit.Error}");
                    exitCode = item.Exit.ShellExitCode is >= 0 and <= 255 ? item.Exit.ShellExitCode : 255;
                }
            }
            await stopInput.CancelAsync();
            try
            {
                await call.RequestStream.CompleteAsync();
            }
            catch (Exception e) when (e is RpcException or InvalidOperationException)
            {
                // The call is over already.
            }
            _ = forwarding.ContinueWith(t => _ = t.Exception, TaskScheduler.Default);
            return exitCode;
        }
        finally
        {
            onResize?.Dispose();
            if (savedTerminal is not null)
                Stty(savedTerminal);
        }
    }

    /// <summary>Stdin bytes as they come, then end of input.</summary>
    private static async Task ForwardStdinAsync(Func<CommandInput, Task> send, CancellationToken cancellationToken)
    {
        using var stdin = Console.OpenStandardInput();
        var buffer = new byte[64 * 1024];
        int read;
        while ((read = await stdin.ReadAsync(buffer, cancellationToken)) > 0)
            await send(new CommandInput { Stdin = ByteString.CopyFrom(buffer, 0, read) });
        await send(new CommandInput { CloseStdin = true });
    }

    private static TerminalSizeInfo CurrentTerminalSize()
    {
        try
        {
            if (!Console.IsOutputRedirected && Console.WindowWidth > 0 && Console.WindowHeight > 0)
                return new TerminalSizeInfo { Cols = (uint)Console.WindowWidth, Rows = (uint)Console.WindowHeight };
        }
        catch (IOException)
        {
        }
        return new TerminalSizeInfo { Cols = 80, Rows = 24 };
    }

    /// <summary>stty on our own terminal (raw mode for --tty); returns its output.</summary>
    private static string Stty(string arguments)
    {
        var start = new ProcessStartInfo("stty") { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var argument in arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start) ?? throw new CliException("cannot run stty");
        var output = process.StandardOutput.ReadToEnd().Trim();
        process.WaitForExit();
        return output;
    }

    private static Command CommandsCommand()
    {
        var command = new Command("cmd", "The commands of a session (started with: kata-agent session sh).");
        command.Subcommands.Add(ListCommandsCommand());
        command.Subcommands.Add(KillCommandCommand());
        return command;
    }

    private static Command ListCommandsCommand()
    {
        var id = KernelIdArgument();
        var command = new Command("ls", "List a session's running commands and those that ended recently.\n\nExamples:\n  kata-agent session cmd ls $id");
        command.Arguments.Add(id);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var reply = await connection.Client.Sessions.ListCommandsAsync(new SessionRef { KernelId = parse.GetValue(id)! }, cancellationToken: ct);
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(reply);
                return 0;
            }
            Console.WriteLine("COMMAND ID\tPID\tPTY\tSTATE\tCOMMAND");
            foreach (var info in reply.Commands)
            {
                var state = info.Exit is null ? "running"
                    : !string.IsNullOrEmpty(info.Exit.Error) ? "lost"
                    : info.Exit.HasSignal ? string.Create(CultureInfo.InvariantCulture, $"signal {info.Exit.Signal}")
                    : string.Create(CultureInfo.InvariantCulture, $"exit {info.Exit.ExitCode}");
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{info.CommandId}\t{info.Pid}\t{(info.Pty ? "yes" : "no")}\t{state}\t{info.Command}"));
            }
            return 0;
        });
        return command;
    }

    private static Command KillCommandCommand()
    {
        var id = KernelIdArgument();
        var commandId = new Argument<string>("COMMAND_ID") { Description = "The command's id (see: kata-agent session cmd ls)" };
        var signal = new Option<string>("--signal", "-s") { Description = "Signal name or number", DefaultValueFactory = _ => "TERM" };
        var command = new Command("kill", "Send a signal to a command's process group.\n\nExamples:\n  kata-agent session cmd kill $id cmd-0123456789ab --signal TERM");
        command.Arguments.Add(id);
        command.Arguments.Add(commandId);
        command.Options.Add(signal);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            await connection.Client.Sessions.SignalCommandAsync(new SignalCommandRequest
            {
                KernelId = parse.GetValue(id)!, CommandId = parse.GetValue(commandId)!, Signal = parse.GetValue(signal)!,
            }, cancellationToken: ct);
            return 0;
        });
        return command;
    }
}
