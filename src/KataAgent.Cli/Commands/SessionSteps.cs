using System.Globalization;
using Grpc.Core;
using KataAgent.Api.Client;
using KataAgent.Api.Server;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

/// <summary>Steps that `run` and `session create` share.</summary>
internal static class SessionSteps
{
    /// <summary>Makes sure the image is there; the default base image is built and imported when missing.</summary>
    public static async Task EnsureImageAsync(ApiClient client, string image, CancellationToken cancellationToken)
    {
        try
        {
            await client.Images.InspectImageAsync(new ImageRef { Name = image }, cancellationToken: cancellationToken);
            return;
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.NotFound && image == BaseImages.DefaultImage)
        {
        }
        await BuildBaseAsync(client, "python", cancellationToken);
    }

    public static async Task<ImageInfo> BuildBaseAsync(ApiClient client, string kind, CancellationToken cancellationToken)
    {
        Output.Info($"building the {kind} base image (the first build takes about a minute; later ones come from the cache)");
        return await Output.WithStatusAsync($"building the {kind} base image", async report =>
        {
            using var call = client.Images.BuildBaseImage(new BuildBaseImageRequest { Kind = kind }, cancellationToken: cancellationToken);
            await foreach (var reply in call.ResponseStream.ReadAllAsync(cancellationToken))
            {
                if (reply.KindCase == BuildBaseImageReply.KindOneofCase.Image)
                    return reply.Image;
                report(reply.Progress);
            }
            throw new CliException("the agent ended the image build without a result");
        }, plainProgress: true);
    }

    public static Task<SessionInfo> CreateAsync(ApiClient client, CreateSessionRequest request, CancellationToken cancellationToken) =>
        Output.WithStatusAsync($"creating a session from {request.Image}", async report =>
        {
            using var call = client.Sessions.CreateSession(request, cancellationToken: cancellationToken);
            await foreach (var reply in call.ResponseStream.ReadAllAsync(cancellationToken))
            {
                if (reply.KindCase == CreateSessionReply.KindOneofCase.Session)
                    return reply.Session;
                report(reply.KindCase == CreateSessionReply.KindOneofCase.StepDone
                    ? string.Create(CultureInfo.InvariantCulture, $"creating a session: {reply.StepDone.Step} done in {reply.StepDone.Seconds * 1000:0} ms")
                    : $"creating a session: {reply.Progress}");
            }
            throw new CliException("the agent ended the create call without a session");
        });

    /// <summary>Best effort, even when the command was cancelled: a session of `run` must not outlive it.</summary>
    public static async Task DestroyQuietlyAsync(ApiClient client, string kernelId)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try
        {
            await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = kernelId }, cancellationToken: timeout.Token);
        }
        catch (RpcException e)
        {
            Output.Warn($"could not destroy session {kernelId}: {e.Status.Detail} (remove it with: kata-agent session rm {kernelId})");
        }
    }
}
