using System.CommandLine;
using System.Formats.Tar;
using System.Globalization;
using Google.Protobuf;
using KataAgent.Api.Client;
using KataAgent.Api.V1;
using KataAgent.Cli.Config;
using Spectre.Console;

namespace KataAgent.Cli.Commands;

// `session cp|files`: files in and out of a session's work dir.
internal static partial class SessionCommands
{
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
                await Console.Error.WriteLineAsync($"note: the directory has more than {reply.Limit} entries; listed are the first {reply.Entries.Count} read (sorted), not the first by name");
            return 0;
        });
        return command;
    }
}
