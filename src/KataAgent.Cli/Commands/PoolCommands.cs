using System.CommandLine;
using System.Globalization;
using KataAgent.Api.V1;
using Spectre.Console;

namespace KataAgent.Cli.Commands;

/// <summary>`kata-agent pool ls`: the warm pools of the running serve (docs/POOL.md).</summary>
internal static class PoolCommands
{
    public static Command Create()
    {
        var pool = new Command("pool", "Warm pools: running sandboxes claimed by creates of their image, runtime class and shape.");
        pool.Subcommands.Add(ListCommand());
        return pool;
    }

    private static Command ListCommand()
    {
        var command = new Command("ls", "List the warm pools with their sizes and counters.\n\nExamples:\n  kata-agent pool ls\n  kata-agent pool ls --json | jq '.pools[] | {key, idle, claims, misses}'");
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var reply = await connection.Client.Sessions.ListPoolsAsync(new ListPoolsRequest(), cancellationToken: ct);
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(reply);
                return 0;
            }
            var table = new Table().Border(TableBorder.Simple);
            foreach (var column in new[] { "POOL", "IDLE", "FILLING", "MIN/TARGET/MAX", "CLAIMS", "MISSES", "EVICTED", "REFILL", "LAST ERROR" })
                table.AddColumn(column);
            foreach (var p in reply.Pools)
            {
                table.AddRow(Markup.Escape(p.Key), p.Idle.ToString(CultureInfo.InvariantCulture), p.Filling.ToString(CultureInfo.InvariantCulture),
                    $"{p.Min}/{p.TargetIdle}/{p.Max}", p.Claims.ToString(CultureInfo.InvariantCulture), p.Misses.ToString(CultureInfo.InvariantCulture),
                    p.Evictions.ToString(CultureInfo.InvariantCulture),
                    p.Refills == 0 ? "-" : string.Create(CultureInfo.InvariantCulture, $"{p.MeanRefillSeconds:0.00} s"),
                    Markup.Escape(p.LastError));
            }
            Output.Out.Write(table);
            if (reply.Pools.Count == 0)
                Output.Info("no warm pools (configure [[pool]] entries in the agent's config: docs/POOL.md)");
            return 0;
        });
        return command;
    }
}
