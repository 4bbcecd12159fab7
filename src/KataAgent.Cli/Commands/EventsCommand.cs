using System.CommandLine;
using System.Globalization;
using Grpc.Core;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

/// <summary>`kata-agent events`: follow the lifecycle event feed.</summary>
internal static class EventsCommand
{
    public static Command Create()
    {
        var command = new Command("events", "Follow session lifecycle events (started, exited, oom, destroyed, ...) until Ctrl-C.\n\nExamples:\n  kata-agent events\n  kata-agent events --json");
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            using var call = connection.Client.Agent.WatchEvents(new WatchEventsRequest(), cancellationToken: ct);
            try
            {
                await foreach (var e in call.ResponseStream.ReadAllAsync(ct))
                {
                    if (parse.GetValue(GlobalOptions.Json))
                    {
                        Output.Json(e);
                    }
                    else
                    {
                        Console.WriteLine($"{e.At.ToDateTimeOffset().ToString("u", CultureInfo.InvariantCulture)} {e.KernelId} {e.Kind} {e.State}" +
                            (e.HasExitCode ? $" exit={e.ExitCode}" : "") + (e.Detail.Length > 0 ? $" ({e.Detail})" : ""));
                    }
                }
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
            {
            }
            return 0;
        });
        return command;
    }
}
