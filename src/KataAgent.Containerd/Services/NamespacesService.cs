using Containerd.Services.Namespaces.V1;
using Grpc.Core;

namespace KataAgent.Containerd.Services;

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
