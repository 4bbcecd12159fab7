using Grpc.Core;
using KataAgent.Api.V1;
using Spectre.Console;

namespace KataAgent.Cli.Commands;

/// <summary>
/// The one renderer of an image transfer's streamed progress (`image pull` and `image push`): a progress bar on a
/// terminal, nothing on a pipe.
/// </summary>
internal static class TransferProgressRenderer
{
    /// <summary>Follows a pull or push to its end; returns the final image.</summary>
    public static async Task<ImageInfo> FollowAsync(AsyncServerStreamingCall<TransferReply> call, string description, CancellationToken ct)
    {
        using (call)
        {
            async Task<ImageInfo> Follow(Action<TransferProgress> report)
            {
                await foreach (var reply in call.ResponseStream.ReadAllAsync(ct))
                {
                    if (reply.KindCase == TransferReply.KindOneofCase.Image)
                        return reply.Image;
                    report(reply.Progress);
                }
                throw new CliException("the agent ended the transfer without a result");
            }
            if (Console.IsErrorRedirected)
                return await Follow(_ => { });
            ImageInfo? result = null;
            await Output.Err.Progress().AutoClear(true).StartAsync(async ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(description), maxValue: 1);
                result = await Follow(p => Apply(task, description, p));
            });
            return result!;
        }
    }

    /// <summary>
    /// What one progress message does to the bar: the phase joins the description (escaped: the reference is the
    /// user's text, not markup); the bytes move the bar once the agent knows the total, until then it stays as it is.
    /// </summary>
    internal static void Apply(ProgressTask task, string description, TransferProgress progress)
    {
        task.Description = Markup.Escape($"{description} ({progress.Phase})");
        if (progress.TotalBytes > 0)
        {
            task.MaxValue = progress.TotalBytes;
            task.Value = progress.CompletedBytes;
        }
    }
}
