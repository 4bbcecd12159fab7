using System.CommandLine;
using KataAgent.Api.Client;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

// `session pause|resume`: freezing a session in place and thawing it; `session extend`: pushing its deadlines out.
internal static partial class SessionCommands
{
    private static Command PauseCommand() => FreezeCommand("pause",
        "Pause a session: every process in it stops where it is (interpreter state and runs in progress survive); executes are refused until it is resumed.\n\nExamples:\n  kata-agent session pause $id",
        (client, request, ct) => client.Sessions.PauseSessionAsync(request, cancellationToken: ct).ResponseAsync);

    private static Command ResumeCommand() => FreezeCommand("resume",
        "Resume a paused session: its processes continue, and so does the output of a run that was in progress.\n\nExamples:\n  kata-agent session resume $id",
        (client, request, ct) => client.Sessions.ResumeSessionAsync(request, cancellationToken: ct).ResponseAsync);

    private static Command ExtendCommand()
    {
        var id = KernelIdArgument();
        var by = new Option<string>("--by") { Description = "How much longer, e.g. 30m or 1h: added to the maximum lifetime, and the idle deadline moves at least that far", Required = true };
        var command = new Command("extend", "Push a session's idle and lifetime deadlines out.\n\nExamples:\n  kata-agent session extend $id --by 1h");
        command.Arguments.Add(id);
        command.Options.Add(by);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            var span = SessionOptions.ParseDuration("--by", parse.GetValue(by)!);
            if (span <= TimeSpan.Zero)
                throw new CliException("--by: must be more than 0", 2);
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var session = await connection.Client.Sessions.ExtendSessionAsync(
                new ExtendSessionRequest { KernelId = parse.GetValue(id)!, BySeconds = span.TotalSeconds }, cancellationToken: ct);
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(session);
                return 0;
            }
            Console.WriteLine($"{session.KernelId} idle deadline: {(session.IdleDeadline is { } idle ? DeadlineText(idle.ToDateTimeOffset()) : "none")}, " +
                $"lifetime deadline: {(session.LifetimeDeadline is { } lifetime ? DeadlineText(lifetime.ToDateTimeOffset()) : "none")}");
            return 0;
        });
        return command;
    }

    private static Command FreezeCommand(string name, string description, Func<ApiClient, SessionRef, CancellationToken, Task<SessionInfo>> call)
    {
        var id = KernelIdArgument();
        var command = new Command(name, description);
        command.Arguments.Add(id);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var session = await call(connection.Client, new SessionRef { KernelId = parse.GetValue(id)! }, ct);
            if (parse.GetValue(GlobalOptions.Json))
                Output.Json(session);
            else
                Console.WriteLine($"{session.KernelId} {session.State}");
            return 0;
        });
        return command;
    }
}
