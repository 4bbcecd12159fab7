using System.CommandLine;
using Grpc.Core;
using KataAgent.Api.Server;
using KataAgent.Api.V1;
using KataAgent.Cli.Config;

namespace KataAgent.Cli.Commands;

// `session create|rm|restart|commit`: a session's life, from its image to a new image.
internal static partial class SessionCommands
{
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
                    await Console.Error.WriteLineAsync($"error: {id}: {e.Status.Detail}");
                    failed++;
                }
            }
            return failed == 0 ? 0 : 1;
        });
        return command;
    }

    private static Command RestartCommand()
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

    private static Command CommitCommand()
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
