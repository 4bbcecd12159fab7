using System.CommandLine;
using System.Globalization;
using Google.Protobuf;
using KataAgent.Api.V1;
using KataAgent.Cli.Config;
using Spectre.Console;

namespace KataAgent.Cli.Commands;

/// <summary>`kata-agent image ...`: images in the agent's containerd namespace.</summary>
internal static class ImageCommands
{
    public static Command Create()
    {
        var command = new Command("image", "Manage the images of a running 'kata-agent serve'.\n\nExamples:\n  kata-agent image build-base\n  kata-agent image import my-image.oci.tar --name my/image:1\n  kata-agent image ls");
        command.Subcommands.Add(List());
        command.Subcommands.Add(Import());
        command.Subcommands.Add(Remove());
        command.Subcommands.Add(BuildBase());
        command.Subcommands.Add(Pull());
        command.Subcommands.Add(Push());
        return command;
    }

    private static Command List()
    {
        var command = new Command("ls", "List images.\n\nExamples:\n  kata-agent image ls\n  kata-agent image ls --json");
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var reply = await connection.Client.Images.ListImagesAsync(new ListImagesRequest(), cancellationToken: ct);
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(reply);
                return 0;
            }
            var table = new Table().Border(TableBorder.Simple).AddColumn("NAME").AddColumn("DIGEST").AddColumn("SIZE").AddColumn("UNPACKED").AddColumn("CREATED");
            foreach (var i in reply.Images)
            {
                table.AddRow(Markup.Escape(TerminalText.Name(i.Name)), i.Digest.Length > 19 ? i.Digest[..19] : i.Digest, Sizes.Format(i.Size), i.Unpacked ? "yes" : "no",
                    i.CreatedAt is null ? "" : i.CreatedAt.ToDateTimeOffset().ToString("u", CultureInfo.InvariantCulture));
            }
            Output.Out.Write(table);
            return 0;
        });
        return command;
    }

    private static Command Import()
    {
        var file = new Argument<string>("FILE") { Description = "OCI layout or docker-save tar (gzip/zstd allowed); - reads stdin" };
        var name = new Option<string?>("--name") { Description = "Name for the image (default: the archive's own)" };
        var replace = ReplaceOption();
        var command = new Command("import", "Import an image archive. A name the agent already has is refused unless --replace.\n\nExamples:\n  kata-agent image import python.oci.tar\n  kata-agent image import --name my/app:1 app.tar.gz\n  kata-agent image import --replace --name my/app:1 app-v2.tar");
        command.Arguments.Add(file);
        command.Options.Add(name);
        command.Options.Add(replace);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            var path = parse.GetValue(file)!;
            if (path != "-" && !File.Exists(path))
                throw new CliException($"{path}: no such file", 2);
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            await using var input = path == "-" ? Console.OpenStandardInput() : File.OpenRead(path);
            long? total = path == "-" ? null : input.Length;
            var reply = await SendAsync(connection.Client.Images, input, total, new ImportImageHeader { Name = parse.GetValue(name) ?? "", Replace = parse.GetValue(replace) }, ct);
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(reply);
            }
            else
            {
                foreach (var image in reply.Images)
                    Console.WriteLine($"{image.Name} {image.Digest}");
            }

            return 0;
        });
        return command;
    }

    private static Option<bool> ReplaceOption() => new("--replace")
    {
        Description = "Replace an image of the same name (without it, a name the agent already has is refused, so an archive or registry cannot take over e.g. the base image)",
    };

    private static async Task<ImportImageReply> SendAsync(KataAgent.Api.V1.Images.ImagesClient images, Stream input, long? total, ImportImageHeader header, CancellationToken ct)
    {
        using var call = images.ImportImage(cancellationToken: ct);
        await call.RequestStream.WriteAsync(new ImportImageRequest { Header = header }, ct);
        async Task Pump(Action<long> advanced)
        {
            var buffer = new byte[256 * 1024];
            int n;
            while ((n = await input.ReadAsync(buffer, ct)) > 0)
            {
                await call.RequestStream.WriteAsync(new ImportImageRequest { Chunk = ByteString.CopyFrom(buffer, 0, n) }, ct);
                advanced(n);
            }
            await call.RequestStream.CompleteAsync();
        }
        if (Console.IsErrorRedirected || total is null)
        {
            await Pump(_ => { });
        }
        else
        {
            await Output.Err.Progress().AutoClear(true).StartAsync(async ctx =>
            {
                var task = ctx.AddTask("uploading the archive", maxValue: Math.Max(1, total.Value));
                await Pump(n => task.Increment(n));
            });
        }
        return await Output.WithStatusAsync("importing into containerd", _ => call.ResponseAsync);
    }

    private static Command Remove()
    {
        var names = new Argument<string[]>("NAME") { Description = "Image names", Arity = ArgumentArity.OneOrMore };
        var command = new Command("rm", "Remove images (sessions already running from them are not affected).\n\nExamples:\n  kata-agent image rm my/app:1");
        command.Arguments.Add(names);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            foreach (var image in parse.GetValue(names)!)
            {
                await connection.Client.Images.RemoveImageAsync(new ImageRef { Name = image }, cancellationToken: ct);
                Console.WriteLine(image);
            }
            return 0;
        });
        return command;
    }

    private static Command Pull()
    {
        var reference = new Argument<string>("REFERENCE") { Description = "Image reference, e.g. 127.0.0.1:5000/team/python:3" };
        var name = new Option<string?>("--name") { Description = "Local name (default: the reference)" };
        var replace = ReplaceOption();
        var command = new Command("pull", "Pull an image from an OCI registry (loopback registries over plain HTTP). A name the agent already has, with other content, is refused unless --replace.\n\nExamples:\n  kata-agent image pull 127.0.0.1:5000/team/python:3\n  kata-agent image pull --replace 127.0.0.1:5000/team/python:3");
        command.Arguments.Add(reference);
        command.Options.Add(name);
        command.Options.Add(replace);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var call = connection.Client.Images.PullImage(new PullImageRequest { Reference = parse.GetValue(reference)!, Name = parse.GetValue(name) ?? "", Replace = parse.GetValue(replace) }, cancellationToken: ct);
            var image = await TransferProgressRenderer.FollowAsync(call, $"pulling {parse.GetValue(reference)}", ct);
            if (parse.GetValue(GlobalOptions.Json))
                Output.Json(image);
            else
                Console.WriteLine($"{image.Name} {image.Digest}");
            return 0;
        });
        return command;
    }

    private static Command Push()
    {
        var image = new Argument<string>("IMAGE") { Description = "Local image name" };
        var destination = new Argument<string?>("DESTINATION") { Description = "Destination reference (default: IMAGE)", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("push", "Push an image to an OCI registry.\n\nExamples:\n  kata-agent image push my/app:1 127.0.0.1:5000/team/app:1");
        command.Arguments.Add(image);
        command.Arguments.Add(destination);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var call = connection.Client.Images.PushImage(new PushImageRequest { Image = parse.GetValue(image)!, Destination = parse.GetValue(destination) ?? "" }, cancellationToken: ct);
            var pushed = await TransferProgressRenderer.FollowAsync(call, $"pushing {parse.GetValue(image)}", ct);
            if (parse.GetValue(GlobalOptions.Json))
                Output.Json(pushed);
            else
                Console.WriteLine($"{pushed.Name} {pushed.Digest}");
            return 0;
        });
        return command;
    }

    private static Command BuildBase()
    {
        var kind = new Option<string>("--kind") { Description = "python (default) or busybox", DefaultValueFactory = _ => "python" };
        kind.AcceptOnlyFromAmong("python", "busybox");
        var command = new Command("build-base", "Build the base image with debootstrap (cached) and import it.\n\nExamples:\n  kata-agent image build-base\n  kata-agent image build-base --kind busybox");
        command.Options.Add(kind);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var image = await SessionSteps.BuildBaseAsync(connection.Client, parse.GetValue(kind)!, ct);
            if (parse.GetValue(GlobalOptions.Json))
                Output.Json(image);
            else
                Console.WriteLine($"{image.Name} {image.Digest}");
            return 0;
        });
        return command;
    }
}
