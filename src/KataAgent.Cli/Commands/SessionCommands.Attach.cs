using System.CommandLine;
using System.Globalization;
using Grpc.Core;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

// `session attach|runs`: durable runs (docs/DURABLE-RUNS.md): follow a run from any point, list a session's runs.
internal static partial class SessionCommands
{
    private static Command AttachCommand()
    {
        var id = KernelIdArgument();
        var run = new Argument<string?>("RUN") { Description = "The run id (see: kata-agent session runs ID); default: the run still going, else the last one", Arity = ArgumentArity.ZeroOrOne };
        var from = new Option<long>("--from") { Description = "First event to print (each run numbers its events from 0); default 0: the whole run" };
        var raw = Runs.RawOption();
        var media = new MediaWriter.Options();
        var command = new Command("attach", """
            Print a run's output from the start (or --from SEQ), then follow it live until it ends; the exit code is the run's.
            Ctrl-C detaches: the run goes on, and attaching again loses nothing the agent still keeps.

            Examples:
              kata-agent session attach $id
              kata-agent session attach $id run-1234 --from 40
            """);
        command.Arguments.Add(id);
        command.Arguments.Add(run);
        command.Options.Add(from);
        command.Options.Add(raw);
        media.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var kernelId = parse.GetValue(id)!;
            var fromSeq = parse.GetValue(from);
            if (fromSeq < 0)
                throw new CliException("--from: must be 0 or more", 2);
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var runId = parse.GetValue(run) ?? "";
            var output = new Runs.OutputWriter(parse.GetValue(raw), media.Create(parse, runId.Length > 0 ? runId : "attach"));
            ExecutionResult? end = null;
            var next = fromSeq;
            try
            {
                using var call = connection.Client.Sessions.AttachRun(new AttachRunRequest { KernelId = kernelId, RunId = runId, FromSeq = fromSeq }, cancellationToken: ct);
                await foreach (var reply in call.ResponseStream.ReadAllAsync(ct))
                {
                    runId = reply.RunId;
                    next = reply.Seq + 1;
                    if (reply.Event.KindCase == ExecuteReply.KindOneofCase.Output)
                        output.Write(reply.Event.Output);
                    else if (reply.Event.Result.Status == "waiting-input")
                        Output.Warn($"run {runId} waits for input: kata-agent session input {kernelId} {runId} TEXT");
                    else
                        end = reply.Event.Result;
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                Output.Warn($"detached from run {runId}; it goes on (attach again: kata-agent session attach {kernelId} {runId} --from {next})");
                return 130;
            }
            return end switch
            {
                null => throw new CliException("the agent ended the attach without the run's end"),
                { Status: "exec-timeout" } => Runs.TimeoutExitCode,
                { HasExitCode: true } => end.ExitCode,
                _ => 0,
            };
        });
        return command;
    }

    private static Command RunsCommand()
    {
        var id = KernelIdArgument();
        var command = new Command("runs", "List the runs the agent keeps for a session (oldest first) with their state, event numbers and exit code.\n\nExamples:\n  kata-agent session runs $id");
        command.Arguments.Add(id);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var reply = await connection.Client.Sessions.ListRunsAsync(new SessionRef { KernelId = parse.GetValue(id)! }, cancellationToken: ct);
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(reply);
                return 0;
            }
            Console.WriteLine($"{"RUN",-24} {"STATE",-14} {"EVENTS",-12} {"STARTED",-20} RESULT");
            foreach (var r in reply.Runs)
            {
                var events = string.Create(CultureInfo.InvariantCulture, $"{r.FirstKeptSeq}..{r.NextSeq - 1}");
                var result = r.Result is { } done ? done.Status + (done.HasExitCode ? string.Create(CultureInfo.InvariantCulture, $" (exit {done.ExitCode})") : "") : "";
                Console.WriteLine($"{TerminalText.Name(r.RunId),-24} {r.State,-14} {events,-12} {r.StartedAt.ToDateTimeOffset().ToLocalTime():yyyy-MM-dd HH:mm:ss}  {result}");
            }
            return 0;
        });
        return command;
    }
}
