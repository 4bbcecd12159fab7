using System.CommandLine;
using KataAgent.Api.Client;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

// `session pause|resume`: freezing a session in place and thawing it.
internal static partial class SessionCommands
{
    private static Command PauseCommand() => FreezeCommand("pause",
        "Pause a session: every process in it stops where it is (interpreter state and runs in progress survive); executes are refused until it is resumed.\n\nExamples:\n  kata-agent session pause $id",
        (client, request, ct) => client.Sessions.PauseSessionAsync(request, cancellationToken: ct).ResponseAsync);

    private static Command ResumeCommand() => FreezeCommand("resume",
        "Resume a paused session: its processes continue, and so does the output of a run that was in progress.\n\nExamples:\n  kata-agent session resume $id",
        (client, request, ct) => client.Sessions.ResumeSessionAsync(request, cancellationToken: ct).ResponseAsync);

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
