using Containerd.Services.Containers.V1;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;

namespace KataAgent.Containerd.Services;

public sealed class ContainersService(CallInvoker invoker)
{
    private readonly Containers.ContainersClient _client = new(invoker);

    public Task<Container> CreateAsync(Container container, CancellationToken cancellationToken = default) =>
        Rpc.Call($"containers.create {container.Id}", async () =>
            (await _client.CreateAsync(new CreateContainerRequest { Container = container }, cancellationToken: cancellationToken)).Container);

    public Task<Container> CreateAsync(NewContainer container, CancellationToken cancellationToken = default) =>
        CreateAsync(container.ToProto(), cancellationToken);

    public Task<Container> GetAsync(string id, CancellationToken cancellationToken = default) =>
        Rpc.Call($"containers.get {id}", async () =>
            (await _client.GetAsync(new GetContainerRequest { Id = id }, cancellationToken: cancellationToken)).Container);

    /// <summary>Null instead of an exception when the container does not exist.</summary>
    public async Task<Container?> FindAsync(string id, CancellationToken cancellationToken = default)
    {
        try
        {
            return await GetAsync(id, cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException)
        {
            return null;
        }
    }

    /// <param name="filters">containerd filter expressions, e.g. <c>labels."ai.backend.kernel-id"</c>.</param>
    public Task<IReadOnlyList<Container>> ListAsync(CancellationToken cancellationToken = default, params string[] filters) =>
        Rpc.Call<IReadOnlyList<Container>>("containers.list", async () =>
        {
            var request = new ListContainersRequest();
            request.Filters.Add(filters);
            return (await _client.ListAsync(request, cancellationToken: cancellationToken)).Containers.ToList();
        });

    public Task<Container> UpdateAsync(Container container, IEnumerable<string>? fieldPaths = null, CancellationToken cancellationToken = default) =>
        Rpc.Call($"containers.update {container.Id}", async () =>
        {
            var request = new UpdateContainerRequest { Container = container };
            if (fieldPaths is not null)
                request.UpdateMask = new FieldMask { Paths = { fieldPaths } };
            return (await _client.UpdateAsync(request, cancellationToken: cancellationToken)).Container;
        });

    public Task DeleteAsync(string id, CancellationToken cancellationToken = default) =>
        Rpc.Call($"containers.delete {id}", async () =>
            await _client.DeleteAsync(new DeleteContainerRequest { Id = id }, cancellationToken: cancellationToken));
}
