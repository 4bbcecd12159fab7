using System.CommandLine;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

// `session exec|input|interrupt`: code runs in a session's interpreter.
internal static partial class SessionCommands
{
    private static Command ExecCommand()
    {
        var id = KernelIdArgument();
        var file = new Argument<string?>("FILE") { Description = "File with the code, or - for stdin", Arity = ArgumentArity.ZeroOrOne };
        var code = new Option<string?>("--code", "-c") { Description = "Code to run in the session's interpreter (state persists between execs)" };
        var build = new Option<string?>("--build") { Description = "Batch mode: shell command to build with" };
        var exec = new Option<string?>("--exec") { Description = "Batch mode: shell command to run (its exit code is ours)" };
        var timeout = new Option<double?>("--timeout") { Description = "Stop the run after this many seconds (exit code 124)" };
        var raw = Runs.RawOption();
        var media = new MediaWriter.Options();
        var command = new Command("exec", """
            Run code in a session; output streams live, input() is answered from stdin, the exit code is the code's.
            Media output (plots, images) is written to files in ./kata-agent-media (see --media-dir).
            Runs started while another runs in the session wait for their turn.

            Examples:
              kata-agent session exec $id -c 'print(6*7)'
              kata-agent session exec $id script.py
              kata-agent session exec $id --build 'make' --exec './prog'
            """);
        command.Arguments.Add(id);
        command.Arguments.Add(file);
        foreach (var o in new Option[] { code, build, exec, timeout, raw })
            command.Options.Add(o);
        media.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var request = new ExecuteRequest
            {
                KernelId = parse.GetValue(id)!,
                RunId = Runs.NewRunId(),
                ExecTimeoutSeconds = parse.GetValue(timeout) ?? 0,
            };
            if (parse.GetValue(exec) is not null || parse.GetValue(build) is not null)
            {
                if (parse.GetValue(code) is not null || parse.GetValue(file) is not null)
                    throw new CliException("batch mode (--build/--exec) takes no code", 2);
                request.Mode = ExecutionMode.Batch;
                request.Build = parse.GetValue(build) ?? "";
                request.Exec = parse.GetValue(exec) ?? "";
            }
            else
            {
                request.Mode = ExecutionMode.Query;
                request.Text = await Runs.ReadCodeAsync(parse.GetValue(code), parse.GetValue(file), ct);
            }
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            return await Runs.RunToEndAsync(connection.Client, request, Console.In, parse.GetValue(raw), media.Create(parse, request.RunId), ct);
        });
        return command;
    }

    private static Command InputCommand()
    {
        var id = KernelIdArgument();
        var run = new Argument<string>("RUN_ID") { Description = "The run waiting for input (see 'active run' in session show)" };
        var text = new Argument<string>("TEXT") { Description = "The answer" };
        var command = new Command("input", "Answer a run that waits for input, then follow it to its end.\n\nExamples:\n  kata-agent session input $id run-1a2b3c 'yes'");
        command.Arguments.Add(id);
        command.Arguments.Add(run);
        command.Arguments.Add(text);
        var raw2 = Runs.RawOption();
        command.Options.Add(raw2);
        var media2 = new MediaWriter.Options();
        media2.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var request = new ExecuteRequest { KernelId = parse.GetValue(id)!, RunId = parse.GetValue(run)!, Mode = ExecutionMode.Input, Text = parse.GetValue(text)! };
            return await Runs.RunToEndAsync(connection.Client, request, Console.In, parse.GetValue(raw2), media2.Create(parse, request.RunId), ct);
        });
        return command;
    }

    private static Command InterruptCommand()
    {
        var id = KernelIdArgument();
        var command = new Command("interrupt", "Interrupt the code running in a session (like Ctrl-C; the interpreter and its state stay).\n\nExamples:\n  kata-agent session interrupt $id");
        command.Arguments.Add(id);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            await connection.Client.Sessions.InterruptAsync(new SessionRef { KernelId = parse.GetValue(id)! }, cancellationToken: ct);
            return 0;
        });
        return command;
    }
}
