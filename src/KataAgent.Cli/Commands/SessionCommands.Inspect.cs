using System.CommandLine;
using System.Globalization;
using Grpc.Core;
using KataAgent.Api.V1;
using KataAgent.Cli.Config;
using Spectre.Console;

namespace KataAgent.Cli.Commands;

// `session ls|show|logs|stats`: looking at sessions without changing them.
internal static partial class SessionCommands
{
    private static Command ListCommand()
    {
        var command = new Command("ls", "List sessions.\n\nExamples:\n  kata-agent session ls\n  kata-agent session ls --ended\n  kata-agent session ls --json | jq '.sessions[].kernelId'");
        command.Options.Add(GlobalOptions.Json);
        var ended = EndedOption();
        command.Options.Add(ended);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var listEnded = parse.GetValue(ended);
            var reply = await connection.Client.Sessions.ListSessionsAsync(new ListSessionsRequest { IncludeEnded = listEnded }, cancellationToken: ct);
            if (listEnded)
                return ListEnded(reply, parse.GetValue(GlobalOptions.Json));
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(reply);
                return 0;
            }
            var table = new Table().Border(TableBorder.Simple);
            foreach (var column in new[] { "ID", "IMAGE", "RUNTIME", "STATE", "CPU", "MEMORY", "CREATED", "PORTS" })
                table.AddColumn(column);
            foreach (var s in reply.Sessions)
            {
                table.AddRow(Markup.Escape(s.KernelId), Markup.Escape(TerminalText.Name(s.Image)), s.RuntimeClass, StateText(s),
                    s.Cpus.ToString("0.##", CultureInfo.InvariantCulture), Sizes.Format(s.MemoryBytes),
                    Age(s.CreatedAt.ToDateTimeOffset()), Markup.Escape(string.Join(", ", s.Ports.Where(p => p.Name is not ("replin" or "replout"))
                        .Select(p => $"{p.Name}:{p.HostIp}:{p.HostPort}"))));
            }
            Output.Out.Write(table);
            if (reply.Sessions.Count == 0)
                Output.Info("no sessions (create one with: kata-agent session create)");
            return 0;
        });
        return command;
    }

    private static string StateText(SessionInfo s) =>
        s.State + (s.HasExitCode ? $" ({s.ExitCode})" : "") + (s.OutOfMemory ? " oom" : "");

    /// <summary>"2026-12-01 20:10:00Z (in 5 min)".</summary>
    internal static string DeadlineText(DateTimeOffset at)
    {
        var left = at - DateTimeOffset.UtcNow;
        var inText = left < TimeSpan.FromMinutes(1) ? $"{Math.Max(0, (int)left.TotalSeconds)} s"
            : left < TimeSpan.FromHours(1) ? $"{(int)left.TotalMinutes} min" : $"{(int)left.TotalHours} h";
        return $"{at.ToString("u", CultureInfo.InvariantCulture)} (in {inText})";
    }

    /// <summary>"ended 3m ago: oom-killed (limit 1 GiB)".</summary>
    internal static string EndedText(SessionEndReason end) =>
        $"ended {Age(end.At.ToDateTimeOffset())}: {TerminalText.Name(end.Description.Length > 0 ? end.Description : end.Kind)}";

    private static string Age(DateTimeOffset at)
    {
        var age = DateTimeOffset.UtcNow - at;
        return age.TotalSeconds < 60 ? $"{(int)age.TotalSeconds}s ago"
            : age.TotalMinutes < 60 ? $"{(int)age.TotalMinutes}m ago"
            : age.TotalHours < 48 ? $"{(int)age.TotalHours}h ago"
            : $"{(int)age.TotalDays}d ago";
    }

    private static Command ShowCommand()
    {
        var id = KernelIdArgument();
        var command = new Command("show", "Show one session in detail.\n\nExamples:\n  kata-agent session show 3f2a...\n  kata-agent session show 3f2a... --json");
        command.Arguments.Add(id);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var s = await connection.Client.Sessions.GetSessionAsync(new SessionRef { KernelId = parse.GetValue(id)! }, cancellationToken: ct);
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(s);
                return 0;
            }
            var grid = new Grid().AddColumn().AddColumn();
            void Row(string k, string v) => grid.AddRow(new Text(k), new Text(v));
            Row("kernel id", s.KernelId);
            Row("session id", TerminalText.Name(s.SessionId));
            Row("image", TerminalText.Name(s.Image));
            Row("runtime class", s.RuntimeClass);
            Row("state", StateText(s));
            if (s.EndReason is { } end)
                Row("ended", EndedText(end));
            Row("resources", $"{s.Cpus.ToString("0.##", CultureInfo.InvariantCulture)} cpu, {Sizes.Format(s.MemoryBytes)} memory, {Sizes.Format(s.ShmBytes)} shm");
            Row("created", s.CreatedAt.ToDateTimeOffset().ToString("u", CultureInfo.InvariantCulture));
            Row("scratch dir", s.ScratchDir);
            Row("active run", s.ActiveRunId.Length > 0 ? s.ActiveRunId : "-");
            if (s.IdleDeadline is { } idle)
                Row("idle deadline", DeadlineText(idle.ToDateTimeOffset()));
            if (s.LifetimeDeadline is { } lifetime)
                Row("lifetime deadline", DeadlineText(lifetime.ToDateTimeOffset()));
            foreach (var p in s.Ports)
                Row($"port {TerminalText.Name(p.Name)}", $"{p.Protocol} {p.ContainerPort} -> {p.HostIp}:{p.HostPort}");
            foreach (var p in s.ServicePorts.Where(p => p.UrlTemplate.Length > 0))
                Row($"service {TerminalText.Name(p.Name)}", TerminalText.Name(p.UrlTemplate));
            if (s.Features.Count > 0)
                Row("features", TerminalText.Name(string.Join(' ', s.Features)));
            if (s.RunnerCommand.Count > 0)
                Row("runner", TerminalText.Name("image's own: " + string.Join(' ', s.RunnerCommand)));
            Output.Out.Write(grid);
            return 0;
        });
        return command;
    }

    private static Command LogsCommand()
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
                    await Console.Out.WriteAsync(escape ? TerminalText.Output(chunk.Text) : chunk.Text);
                    await Console.Out.FlushAsync(ct);
                }
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
            {
            }
            return 0;
        });
        return command;
    }

    private static Command StatsCommand()
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
            Row("state", s.State.Length > 0 ? s.State : "-");
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
}
