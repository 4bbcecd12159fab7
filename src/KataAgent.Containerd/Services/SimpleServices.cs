using Containerd.Services.Introspection.V1;
using Containerd.Services.Namespaces.V1;
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

public sealed class NamespacesService(CallInvoker invoker)
{
    private readonly Namespaces.NamespacesClient _client = new(invoker);

    public Task CreateAsync(string name, IReadOnlyDictionary<string, string>? labels = null, CancellationToken cancellationToken = default) =>
        Rpc.Call("namespaces.create", async () =>
        {
            var ns = new Namespace { Name = name };
            if (labels is not null)
                ns.Labels.Add(labels);
            await _client.CreateAsync(new CreateNamespaceRequest { Namespace = ns }, cancellationToken: cancellationToken);
        });

    /// <summary>Creates the namespace unless it already exists.</summary>
    public async Task EnsureAsync(string name, CancellationToken cancellationToken = default)
    {
        try
        {
            await CreateAsync(name, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdAlreadyExistsException)
        {
        }
    }

    public Task<IReadOnlyList<string>> ListAsync(CancellationToken cancellationToken = default) =>
        Rpc.Call<IReadOnlyList<string>>("namespaces.list", async () =>
        {
            var r = await _client.ListAsync(new ListNamespacesRequest(), cancellationToken: cancellationToken);
            return r.Namespaces.Select(n => n.Name).ToList();
        });

    public Task DeleteAsync(string name, CancellationToken cancellationToken = default) =>
        Rpc.Call("namespaces.delete", async () =>
            await _client.DeleteAsync(new DeleteNamespaceRequest { Name = name }, cancellationToken: cancellationToken));
}

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
