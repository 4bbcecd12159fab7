using Containerd.Services.Introspection.V1;
using Grpc.Core;

namespace KataAgent.Containerd.Services;

public sealed record ContainerdPlugin(string Type, string Id, bool Ok, string? InitError);

public sealed class IntrospectionService(CallInvoker invoker)
{
    private readonly Introspection.IntrospectionClient _client = new(invoker);

    public Task<IReadOnlyList<ContainerdPlugin>> PluginsAsync(CancellationToken cancellationToken = default, params string[] filters) =>
        Rpc.Call<IReadOnlyList<ContainerdPlugin>>("introspection.plugins", async () =>
        {
            var request = new PluginsRequest();
            request.Filters.Add(filters);
            var r = await _client.PluginsAsync(request, cancellationToken: cancellationToken);
            return r.Plugins.Select(p => new ContainerdPlugin(p.Type, p.Id, p.InitErr is null, p.InitErr?.Message)).ToList();
        });
}
