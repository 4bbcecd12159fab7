using Containerd.Services.Diff.V1;
using Containerd.Types;
using Grpc.Core;

namespace KataAgent.Containerd.Services;

public sealed class DiffService(CallInvoker invoker)
{
    private readonly Diff.DiffClient _client = new(invoker);

    /// <summary>Applies a layer blob from the content store onto the mounts; returns the uncompressed descriptor (diff id).</summary>
    public Task<ContentDescriptor> ApplyAsync(ContentDescriptor layer, IEnumerable<Mount> mounts, CancellationToken cancellationToken = default) =>
        Rpc.Call($"diff.apply {layer.Digest}", async () =>
        {
            var request = new ApplyRequest { Diff = layer };
            request.Mounts.Add(mounts);
            return (await _client.ApplyAsync(request, cancellationToken: cancellationToken)).Applied;
        });

    /// <summary>Writes the difference between two mount sets into the content store as a layer.</summary>
    public Task<ContentDescriptor> DiffAsync(IEnumerable<Mount> lower, IEnumerable<Mount> upper, string mediaType, string? reference = null,
        IReadOnlyDictionary<string, string>? labels = null, CancellationToken cancellationToken = default) =>
        Rpc.Call("diff.diff", async () =>
        {
            var request = new DiffRequest { MediaType = mediaType, Ref = reference ?? "" };
            request.Left.Add(lower);
            request.Right.Add(upper);
            if (labels is not null)
                request.Labels.Add(labels);
            return (await _client.DiffAsync(request, cancellationToken: cancellationToken)).Diff;
        });
}
