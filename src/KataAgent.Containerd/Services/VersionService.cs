using Google.Protobuf.WellKnownTypes;
using Grpc.Core;

namespace KataAgent.Containerd.Services;

public sealed record ContainerdVersion(string Version, string Revision);

public sealed class VersionService(CallInvoker invoker)
{
    private readonly global::Containerd.Services.Version.V1.Version.VersionClient _client = new(invoker);

    public Task<ContainerdVersion> GetAsync(CancellationToken cancellationToken = default) =>
        Rpc.Call("version", async () =>
        {
            var r = await _client.VersionAsync(new Empty(), cancellationToken: cancellationToken);
            return new ContainerdVersion(r.Version, r.Revision);
        });
}
