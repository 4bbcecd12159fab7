using Grpc.Core;
using KataAgent.Api.V1;
using KataAgent.Containerd;
using KataAgent.Images;
using KataAgent.Images.Registry;
using Microsoft.Extensions.Logging;
using Agent = KataAgent.Core.Agent;

namespace KataAgent.Api.Server;

/// <summary>The Images service: images in the agent's containerd namespace.</summary>
public sealed class ImagesService(Agent agent, ILogger<ImagesService> logger) : V1.Images.ImagesBase
{
    public override async Task<ListImagesReply> ListImages(ListImagesRequest request, ServerCallContext context)
    {
        var reply = new ListImagesReply();
        var inspector = new ImageInspector(agent.Containerd);
        foreach (var image in await agent.Containerd.Images.ListAsync(context.CancellationToken))
        {
            KataAgent.Images.ImageDetails? details = null;
            try
            {
                details = await inspector.FindAsync(image.Name, cancellationToken: context.CancellationToken);
            }
            catch (Exception e) when (e is ContainerdException or InvalidOperationException or System.Text.Json.JsonException)
            {
                // An image of another platform or with missing content still shows up, with what the record says.
                logger.LogDebug("cannot inspect {Image}: {Message}", image.Name, e.Message);
            }
            var info = details is not null
                ? Mapping.ToProto(details)
                : new ImageInfo { Name = image.Name, Digest = image.Target?.Digest ?? "", MediaType = image.Target?.MediaType ?? "", Size = image.Target?.Size ?? 0 };
            if (image.CreatedAt is not null)
                info.CreatedAt = image.CreatedAt;
            reply.Images.Add(info);
        }
        return reply;
    }

    public override async Task<V1.ImageDetails> InspectImage(ImageRef request, ServerCallContext context)
    {
        var details = await new ImageInspector(agent.Containerd).FindAsync(RequireName(request.Name), cancellationToken: context.CancellationToken)
            ?? throw new RpcException(new Status(StatusCode.NotFound,
                $"no image '{request.Name}' on this agent: import it (kata-agent image import) or build the base image (kata-agent image build-base)"));
        return Mapping.ToProtoDetails(details);
    }

    public override async Task<ImportImageReply> ImportImage(IAsyncStreamReader<ImportImageRequest> requestStream, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        if (!await requestStream.MoveNext(ct) || requestStream.Current.KindCase != ImportImageRequest.KindOneofCase.Header)
            throw new ArgumentException("the first import message must be the header");
        var header = requestStream.Current.Header;
        // The importer reads the archive by path (random access to blobs): spool the stream first.
        var spoolDir = Path.Combine(agent.Options.DataDir, "tmp");
        Directory.CreateDirectory(spoolDir);
        var spool = Path.Combine(spoolDir, $"import-{Guid.NewGuid():N}.tar");
        try
        {
            await using (var file = new FileStream(spool, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true))
            await using (var content = new ChunkStream<ImportImageRequest>(requestStream,
                m => m.KindCase == ImportImageRequest.KindOneofCase.Chunk ? m.Chunk : null, ct))
            {
                await content.CopyToAsync(file, ct);
            }
            var imported = await new ImageImporter(agent.Containerd, logger).ImportAsync(spool, new ImportOptions
            {
                Name = string.IsNullOrEmpty(header.Name) ? null : header.Name,
                TempDirectory = spoolDir,
                Replace = header.Replace,
                MaxExpandedBytes = agent.Options.ImageMaxExpandedBytes,
            }, ct);
            var reply = new ImportImageReply();
            foreach (var image in imported)
                reply.Images.Add(await InfoAsync(image.Name, ct));
            logger.LogInformation("imported {Images}", string.Join(", ", imported.Select(i => i.Name)));
            return reply;
        }
        finally
        {
            File.Delete(spool);
        }
    }

    public override async Task<RemoveImageReply> RemoveImage(ImageRef request, ServerCallContext context)
    {
        var name = RequireName(request.Name);
        if (await agent.Containerd.Images.FindAsync(name, context.CancellationToken) is null)
            throw new RpcException(new Status(StatusCode.NotFound, $"no image '{name}' on this agent (list them with: kata-agent image ls)"));
        await agent.Containerd.Images.DeleteAsync(name, sync: true, context.CancellationToken);
        logger.LogInformation("removed image {Image}", name);
        return new RemoveImageReply();
    }

    public override async Task BuildBaseImage(BuildBaseImageRequest request, IServerStreamWriter<BuildBaseImageReply> responseStream, ServerCallContext context)
    {
        var progress = new StreamProgress<BuildBaseImageReply>(responseStream, line => new BuildBaseImageReply { Progress = line });
        var name = await BaseImages.EnsureAsync(agent, request.Kind, progress, context.CancellationToken);
        await progress.FlushAsync();
        await responseStream.WriteAsync(new BuildBaseImageReply { Image = await InfoAsync(name, context.CancellationToken) }, context.CancellationToken);
    }

    public override async Task PullImage(PullImageRequest request, IServerStreamWriter<TransferReply> responseStream, ServerCallContext context)
    {
        var reference = RequireName(request.Reference);
        using var registry = new RegistryClient(new RegistryOptions(), logger);
        var progress = new StreamProgress<TransferReply, PullProgress>(responseStream, p => new TransferReply
        {
            Progress = new TransferProgress { Phase = p.Phase.ToString().ToLowerInvariant(), CompletedBytes = p.CompletedBytes, TotalBytes = p.TotalBytes },
        });
        var pulled = await new ImagePuller(agent.Containerd, registry, logger).PullAsync(reference,
            new PullOptions { Name = string.IsNullOrEmpty(request.Name) ? null : request.Name, Replace = request.Replace, MaxExpandedBytes = agent.Options.ImageMaxExpandedBytes }, progress, context.CancellationToken);
        await progress.FlushAsync();
        logger.LogInformation("pulled {Reference} as {Image}", reference, pulled.Name);
        await responseStream.WriteAsync(new TransferReply { Image = await InfoAsync(pulled.Name, context.CancellationToken) }, context.CancellationToken);
    }

    public override async Task PushImage(PushImageRequest request, IServerStreamWriter<TransferReply> responseStream, ServerCallContext context)
    {
        var image = RequireName(request.Image);
        var destination = string.IsNullOrEmpty(request.Destination) ? image : request.Destination;
        using var registry = new RegistryClient(new RegistryOptions(), logger);
        var progress = new StreamProgress<TransferReply, PushProgress>(responseStream, p => new TransferReply
        {
            Progress = new TransferProgress { Phase = p.Phase.ToString().ToLowerInvariant(), CompletedBytes = p.CompletedBytes, TotalBytes = p.TotalBytes },
        });
        var pushed = await new ImagePusher(agent.Containerd, registry, logger).PushAsync(image, destination, null, progress, context.CancellationToken);
        await progress.FlushAsync();
        logger.LogInformation("pushed {Image} to {Destination}", image, destination);
        await responseStream.WriteAsync(new TransferReply
        {
            Image = new ImageInfo { Name = pushed.Reference.ToString(), Digest = pushed.Target.Digest, MediaType = pushed.Target.MediaType, Size = pushed.Target.Size },
        }, context.CancellationToken);
    }

    private async Task<ImageInfo> InfoAsync(string name, CancellationToken cancellationToken)
    {
        var details = await new ImageInspector(agent.Containerd).InspectAsync(name, cancellationToken: cancellationToken);
        return Mapping.ToProto(details);
    }

    private static string RequireName(string name) =>
        string.IsNullOrWhiteSpace(name) ? throw new ArgumentException("an image name is required") : name;
}
