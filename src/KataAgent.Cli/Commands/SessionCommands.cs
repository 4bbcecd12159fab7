using System.CommandLine;
using System.Formats.Tar;
using System.Globalization;
using Google.Protobuf;
using Grpc.Core;
using KataAgent.Api.Client;
using KataAgent.Api.Server;
using KataAgent.Api.V1;
using KataAgent.Cli.Config;
using Spectre.Console;

namespace KataAgent.Cli.Commands;

/// <summary>`kata-agent session ...`: sessions of a running serve.</summary>
internal static class SessionCommands
{
    public static Command Create()
    {
        var command = new Command("session", """
            Manage the sessions of a running 'kata-agent serve'.

            Examples:
              id=$(kata-agent session create --runtime gvisor)
              kata-agent session exec $id -c 'x = 41'
              kata-agent session exec $id -c 'print(x + 1)'
              kata-agent session cp data.csv $id:data.csv
              kata-agent session ls
              kata-agent session rm $id
            """);
        command.Subcommands.Add(CreateCommand());
        command.Subcommands.Add(ListCommand());
        command.Subcommands.Add(ShowCommand());
        command.Subcommands.Add(ExecCommand());
        command.Subcommands.Add(InputCommand());
        command.Subcommands.Add(InterruptCommand());
        command.Subcommands.Add(CopyCommand());
        command.Subcommands.Add(FilesCommand());
        command.Subcommands.Add(RemoveCommand());
        foreach (var more in SessionMoreCommands.Create())
            command.Subcommands.Add(more);
        return command;
    }

    private static Argument<string> KernelIdArgument() => new("ID") { Description = "The session's kernel id (see: kata-agent session ls)" };

    private static Command CreateCommand()
    {
        var options = new SessionOptions();
        var image = new Argument<string>("IMAGE") { Description = $"Image (default {BaseImages.DefaultImage})", Arity = ArgumentArity.ZeroOrOne, DefaultValueFactory = _ => BaseImages.DefaultImage };
        var command = new Command("create", $"Create a session and print its id.\n\nExamples:\n  kata-agent session create\n  kata-agent session create {BaseImages.DefaultImage} --runtime runc --cpu 2 --mem 1g -e A=1 --json");
        options.AddTo(command);
        command.Arguments.Add(image);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            var name = parse.GetValue(image)!;
            var request = options.ToRequest(parse, name);
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var info = await connection.Client.Agent.GetInfoAsync(new GetInfoRequest(), cancellationToken: ct);
            if (string.IsNullOrEmpty(request.RuntimeClass) && info.FallbackWarning.Length > 0)
                Output.Warn(info.FallbackWarning);
            await SessionSteps.EnsureImageAsync(connection.Client, name, ct);
            var session = await SessionSteps.CreateAsync(connection.Client, request, ct);
            if (parse.GetValue(GlobalOptions.Json))
                Output.Json(session);
            else
                Console.WriteLine(session.KernelId);
            return 0;
        });
        return command;
    }

    private static Command ListCommand()
    {
        var command = new Command("ls", "List sessions.\n\nExamples:\n  kata-agent session ls\n  kata-agent session ls --json | jq '.sessions[].kernelId'");
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var reply = await connection.Client.Sessions.ListSessionsAsync(new ListSessionsRequest(), cancellationToken: ct);
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
            Row("resources", $"{s.Cpus.ToString("0.##", CultureInfo.InvariantCulture)} cpu, {Sizes.Format(s.MemoryBytes)} memory, {Sizes.Format(s.ShmBytes)} shm");
            Row("created", s.CreatedAt.ToDateTimeOffset().ToString("u", CultureInfo.InvariantCulture));
            Row("scratch dir", s.ScratchDir);
            Row("active run", s.ActiveRunId.Length > 0 ? s.ActiveRunId : "-");
            foreach (var p in s.Ports)
                Row($"port {TerminalText.Name(p.Name)}", $"{p.Protocol} {p.ContainerPort} -> {p.HostIp}:{p.HostPort}");
            Output.Out.Write(grid);
            return 0;
        });
        return command;
    }

    private static Command ExecCommand()
    {
        var id = KernelIdArgument();
        var file = new Argument<string?>("FILE") { Description = "File with the code, or - for stdin", Arity = ArgumentArity.ZeroOrOne };
        var code = new Option<string?>("--code", "-c") { Description = "Code to run in the session's interpreter (state persists between execs)" };
        var build = new Option<string?>("--build") { Description = "Batch mode: shell command to build with" };
        var exec = new Option<string?>("--exec") { Description = "Batch mode: shell command to run (its exit code is ours)" };
        var timeout = new Option<double?>("--timeout") { Description = "Stop the run after this many seconds (exit code 124)" };
        var raw = Runs.RawOption();
        var command = new Command("exec", """
            Run code in a session; output streams live, input() is answered from stdin, the exit code is the code's.

            Examples:
              kata-agent session exec $id -c 'print(6*7)'
              kata-agent session exec $id script.py
              kata-agent session exec $id --build 'make' --exec './prog'
            """);
        command.Arguments.Add(id);
        command.Arguments.Add(file);
        foreach (var o in new Option[] { code, build, exec, timeout, raw })
            command.Options.Add(o);
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
            return await Runs.RunToEndAsync(connection.Client, request, Console.In, parse.GetValue(raw), ct);
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
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var request = new ExecuteRequest { KernelId = parse.GetValue(id)!, RunId = parse.GetValue(run)!, Mode = ExecutionMode.Input, Text = parse.GetValue(text)! };
            return await Runs.RunToEndAsync(connection.Client, request, Console.In, parse.GetValue(raw2), ct);
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

    private static Command CopyCommand()
    {
        var source = new Argument<string>("SRC") { Description = "LOCAL_FILE or ID:PATH" };
        var destination = new Argument<string>("DST") { Description = "ID:PATH or LOCAL_PATH (PATH is relative to /home/work)" };
        var command = new Command("cp", """
            Copy a file into a session's work dir (/home/work), or a file or directory out of it (a directory arrives as a tree).

            Examples:
              kata-agent session cp data.csv $id:inputs/data.csv
              kata-agent session cp $id:results/out.json ./out.json
              kata-agent session cp $id:results ./results
            """);
        command.Arguments.Add(source);
        command.Arguments.Add(destination);
        command.SetAction(async (parse, ct) =>
        {
            var (src, dst) = (parse.GetValue(source)!, parse.GetValue(destination)!);
            var (srcId, srcPath) = SplitRemote(src);
            var (dstId, dstPath) = SplitRemote(dst);
            if ((srcId is null) == (dstId is null))
                throw new CliException("exactly one of SRC and DST must be ID:PATH (a session path)", 2);
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            if (dstId is not null)
                await UploadAsync(connection.Client, src, dstId, dstPath!, ct);
            else
                await DownloadAsync(connection.Client, srcId!, srcPath!, dst, ct);
            return 0;
        });
        return command;
    }

    private static (string? Id, string? Path) SplitRemote(string text)
    {
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        return colon > 0 && !text[..colon].Contains('/', StringComparison.Ordinal) ? (text[..colon], text[(colon + 1)..]) : (null, null);
    }

    private static async Task UploadAsync(ApiClient client, string localPath, string kernelId, string remotePath, CancellationToken ct)
    {
        if (Directory.Exists(localPath))
            throw new CliException($"{localPath} is a directory: copy files one at a time (or upload a tar and unpack it in the session)");
        if (!File.Exists(localPath))
            throw new CliException($"{localPath}: no such file");
        if (remotePath.Length == 0 || remotePath.EndsWith('/'))
            remotePath += Path.GetFileName(localPath);
        using var call = client.Sessions.Upload(cancellationToken: ct);
        await call.RequestStream.WriteAsync(new UploadRequest { Header = new UploadHeader { KernelId = kernelId, Path = remotePath, CreateParents = true } }, ct);
        await using (var file = File.OpenRead(localPath))
        {
            var buffer = new byte[64 * 1024];
            int n;
            while ((n = await file.ReadAsync(buffer, ct)) > 0)
                await call.RequestStream.WriteAsync(new UploadRequest { Chunk = ByteString.CopyFrom(buffer, 0, n) }, ct);
        }
        await call.RequestStream.CompleteAsync();
        var reply = await call;
        Output.Info($"{localPath} -> {kernelId}:{remotePath} ({Sizes.Format(reply.BytesWritten)})");
    }

    private static async Task DownloadAsync(ApiClient client, string kernelId, string remotePath, string localPath, CancellationToken ct)
    {
        using var call = client.Sessions.Download(new DownloadRequest { KernelId = kernelId, Path = remotePath }, cancellationToken: ct);
        if (!await call.ResponseStream.MoveNext(ct) || call.ResponseStream.Current.KindCase != DownloadReply.KindOneofCase.Header)
            throw new CliException("the agent sent no download header");
        var header = call.ResponseStream.Current.Header;
        var target = !header.IsTar && Directory.Exists(localPath) ? Path.Combine(localPath, Path.GetFileName(remotePath.TrimEnd('/'))) : localPath;
        await using var content = new DownloadChunkStream(call.ResponseStream);
        if (header.IsTar)
        {
            // Extracted as it arrives: nothing is spooled, so a download never needs twice its size on disk.
            // TarFile refuses entries (and link targets) that would land outside the target directory.
            Directory.CreateDirectory(target);
            await TarFile.ExtractToDirectoryAsync(content, target, overwriteFiles: true, ct);
        }
        else
        {
            // A file goes through a temp name, so a failed download never leaves a half file at the target.
            var temp = target.TrimEnd('/') + $".kata-download-{Environment.ProcessId}";
            try
            {
                await using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
                    await content.CopyToAsync(file, ct);
                File.Move(temp, target, overwrite: true);
            }
            finally
            {
                File.Delete(temp);
            }
        }
        var total = content.BytesRead;
        Output.Info($"{kernelId}:{remotePath} -> {target} ({Sizes.Format(total)}{(header.IsTar ? ", directory" : "")})");
    }

    private static Command FilesCommand()
    {
        var id = KernelIdArgument();
        var path = new Argument<string>("PATH") { Description = "Directory relative to /home/work", Arity = ArgumentArity.ZeroOrOne, DefaultValueFactory = _ => "" };
        var command = new Command("files", "List a directory of a session's work dir.\n\nExamples:\n  kata-agent session files $id\n  kata-agent session files $id results --json");
        command.Arguments.Add(id);
        command.Arguments.Add(path);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var reply = await connection.Client.Sessions.ListFilesAsync(new ListFilesRequest { KernelId = parse.GetValue(id)!, Path = parse.GetValue(path) ?? "" }, cancellationToken: ct);
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(reply);
                return 0;
            }
            var table = new Table().Border(TableBorder.Simple).AddColumn("NAME").AddColumn("TYPE").AddColumn("SIZE").AddColumn("MODE").AddColumn("MODIFIED");
            foreach (var e in reply.Entries)
            {
                // The guest names its files and link targets: never let them steer the terminal.
                table.AddRow(Markup.Escape(TerminalText.Name(e.Name) + (e.LinkTarget.Length > 0 ? " -> " + TerminalText.Name(e.LinkTarget) : "")), e.Type, e.Size.ToString(CultureInfo.InvariantCulture),
                    Convert.ToString(e.Mode, 8), e.ModifiedAt.ToDateTimeOffset().ToString("u", CultureInfo.InvariantCulture));
            }
            Output.Out.Write(table);
            if (reply.Truncated)
                Console.Error.WriteLine($"note: the directory has more than {reply.Limit} entries; listed are the first {reply.Entries.Count} read (sorted), not the first by name");
            return 0;
        });
        return command;
    }

    private static Command RemoveCommand()
    {
        var ids = new Argument<string[]>("ID") { Description = "Session ids", Arity = ArgumentArity.OneOrMore };
        var keepScratch = new Option<bool>("--keep-scratch") { Description = "Keep the session's scratch dir on the host" };
        var command = new Command("rm", "Destroy sessions (container, network, ports, scratch dir).\n\nExamples:\n  kata-agent session rm $id\n  kata-agent session rm $(kata-agent session ls --json | jq -r '.sessions[].kernelId')");
        command.Arguments.Add(ids);
        command.Options.Add(keepScratch);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var failed = 0;
            foreach (var id in parse.GetValue(ids)!)
            {
                try
                {
                    var reply = await connection.Client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = id, KeepScratch = parse.GetValue(keepScratch) }, cancellationToken: ct);
                    Console.WriteLine(reply.Existed ? id : $"{id} (no such session; nothing left behind)");
                }
                catch (RpcException e)
                {
                    Console.Error.WriteLine($"error: {id}: {e.Status.Detail}");
                    failed++;
                }
            }
            return failed == 0 ? 0 : 1;
        });
        return command;
    }
}
