using System.CommandLine;
using System.Globalization;
using Grpc.Core;
using KataAgent.Api.V1;
using KataAgent.Cli.Config;
using Spectre.Console;

namespace KataAgent.Cli.Commands;

/// <summary>`session restart|logs|stats|commit`.</summary>
internal static class SessionMoreCommands
{
    private static Argument<string> KernelIdArgument() => new("ID") { Description = "The session's kernel id (see: kata-agent session ls)" };

    public static IEnumerable<Command> Create() => [Restart(), Logs(), Stats(), Commit()];

    private static Command Restart()
    {
        var id = KernelIdArgument();
        var command = new Command("restart", "Restart a session's container from its image (scratch dir, network and ports stay; interpreter state is lost).\n\nExamples:\n  kata-agent session restart $id");
        command.Arguments.Add(id);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var session = await Output.WithStatusAsync("restarting", _ => connection.Client.Sessions.RestartSessionAsync(new SessionRef { KernelId = parse.GetValue(id)! }, cancellationToken: ct).ResponseAsync);
            if (parse.GetValue(GlobalOptions.Json))
                Output.Json(session);
            else
                Console.WriteLine($"{session.KernelId} {session.State}");
            return 0;
        });
        return command;
    }

    private static Command Logs()
    {
        var id = KernelIdArgument();
        var follow = new Option<bool>("--follow", "-f") { Description = "Keep printing what is appended until Ctrl-C or the session is destroyed" };
        var raw = Runs.RawOption();
        var command = new Command("logs", "Print a session's container log (the kernel runner's own output, not the code's).\n\nExamples:\n  kata-agent session logs $id\n  kata-agent session logs -f $id");
        command.Arguments.Add(id);
        command.Options.Add(follow);
        command.Options.Add(raw);
        command.SetAction(async (parse, ct) =>
        {
            // The runner's log carries what the guest printed there: escaped on a terminal unless --raw.
            var escape = TerminalText.ShouldEscape(!Console.IsOutputRedirected, parse.GetValue(raw));
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            using var call = connection.Client.Sessions.GetLogs(new GetLogsRequest { KernelId = parse.GetValue(id)!, Follow = parse.GetValue(follow) }, cancellationToken: ct);
            try
            {
                await foreach (var chunk in call.ResponseStream.ReadAllAsync(ct))
                {
                    Console.Out.Write(escape ? TerminalText.Output(chunk.Text) : chunk.Text);
                    Console.Out.Flush();
                }
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
            {
            }
            return 0;
        });
        return command;
    }

    private static Command Stats()
    {
        var id = KernelIdArgument();
        var command = new Command("stats", "Show a session's resource usage (CPU, memory, block I/O, pids, network).\n\nExamples:\n  kata-agent session stats $id\n  kata-agent session stats $id --json");
        command.Arguments.Add(id);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var s = await connection.Client.Sessions.GetStatsAsync(new SessionRef { KernelId = parse.GetValue(id)! }, cancellationToken: ct);
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(s);
                return 0;
            }
            static string Bytes(ulong? v) => v is ulong b ? Sizes.Format((long)Math.Min(b, long.MaxValue)) : "-";
            var grid = new Grid().AddColumn().AddColumn();
            void Row(string k, string v) => grid.AddRow(new Text(k), new Text(v));
            Row("cpu", s.HasCpuPercent ? s.CpuPercent.ToString("0.0", CultureInfo.InvariantCulture) + " %" : "-");
            Row("cpu time", TimeSpan.FromTicks((long)(s.CpuUsageNanos / 100)).ToString(@"hh\:mm\:ss\.ff", CultureInfo.InvariantCulture));
            Row("memory", $"{Bytes(s.MemoryUsageBytes)} (peak {Bytes(s.MemoryPeakBytes)}, limit {(s.HasMemoryLimitBytes ? Bytes(s.MemoryLimitBytes) : "-")})");
            Row("block i/o", s.HasBlockReadBytes ? $"read {Bytes(s.BlockReadBytes)}, written {Bytes(s.BlockWriteBytes)}" : "-");
            Row("pids", s.HasPids ? s.Pids.ToString(CultureInfo.InvariantCulture) : "-");
            Row("network", s.HasNetworkRxBytes ? $"rx {Sizes.Format(s.NetworkRxBytes)}, tx {Sizes.Format(s.NetworkTxBytes)}" : "-");
            Row("source", s.Source);
            Output.Out.Write(grid);
            return 0;
        });
        return command;
    }

    private static Command Commit()
    {
        var id = KernelIdArgument();
        var name = new Argument<string>("IMAGE") { Description = "Name of the new image" };
        var replace = new Option<bool>("--replace") { Description = "Replace an existing image of that name" };
        var command = new Command("commit", "Save a session's filesystem changes as a new image (a running session is paused briefly).\n\nExamples:\n  kata-agent session commit $id my/python-with-numpy:1");
        command.Arguments.Add(id);
        command.Arguments.Add(name);
        command.Options.Add(replace);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var reply = await Output.WithStatusAsync("committing", _ => connection.Client.Sessions.CommitSessionAsync(new CommitSessionRequest
            {
                KernelId = parse.GetValue(id)!,
                ImageName = parse.GetValue(name)!,
                Replace = parse.GetValue(replace),
            }, cancellationToken: ct).ResponseAsync);
            if (parse.GetValue(GlobalOptions.Json))
                Output.Json(reply);
            else
                Console.WriteLine($"{reply.Name} {reply.ManifestDigest} ({Sizes.Format(reply.LayerSize)} layer, paused {reply.PausedSeconds:0.00} s)");
            return 0;
        });
        return command;
    }
}
