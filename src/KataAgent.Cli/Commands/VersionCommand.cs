using System.CommandLine;
using KataAgent.Api.Client;
using KataAgent.Api.Server;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

/// <summary>`kata-agent version`: this CLI's version, and the serve's when one runs.</summary>
internal static class VersionCommand
{
    public static Command Create()
    {
        var command = new Command("version", "Print the version of this CLI and, when a serve runs, of the agent and its containerd.\n\nExamples:\n  kata-agent version\n  kata-agent version --json");
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            var settings = new GlobalSettings(parse);
            AgentInfo? info = null;
            var socket = settings.LoadConfig().Api.SocketPath;
            if (settings.Address is not null || await ApiClient.IsListeningAsync(socket, ct))
            {
                await using var connection = await AgentConnection.ConnectAsync(settings, allowInProcess: false, ct);
                info = await connection.Client.Agent.GetInfoAsync(new GetInfoRequest(), cancellationToken: ct);
            }
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(new { client = AgentService.Version, agent = info?.Version, containerd = info?.ContainerdVersion });
                return 0;
            }
            Console.WriteLine($"kata-agent {AgentService.Version}");
            Console.WriteLine(info is null
                ? $"agent: not running (no serve on {socket})"
                : $"agent: {info.Version} ({info.AgentId}), containerd {info.ContainerdVersion}, default runtime class {info.DefaultRuntimeClass}");
            return 0;
        });
        return command;
    }
}
