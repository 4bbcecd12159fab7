using Containerd.Services.Leases.V1;
using Grpc.Core;

namespace KataAgent.Containerd.Services;

public sealed class LeasesService(CallInvoker invoker)
{
    /// <summary>containerd drops a lease carrying this label once the time (RFC 3339) has passed.</summary>
    public const string ExpireLabel = "containerd.io/gc.expire";

    private readonly Leases.LeasesClient _client = new(invoker);

    /// <param name="expiresAfter">A safety net: if we die holding the lease, GC still frees what it pinned.</param>
    public Task<Lease> CreateAsync(string? id = null, TimeSpan? expiresAfter = null, IReadOnlyDictionary<string, string>? labels = null,
        CancellationToken cancellationToken = default) =>
        Rpc.Call("leases.create", async () =>
        {
            var request = new CreateRequest { Id = id ?? "" };
            if (labels is not null)
                request.Labels.Add(labels);
            if (expiresAfter is { } ttl)
                request.Labels[ExpireLabel] = DateTimeOffset.UtcNow.Add(ttl).ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);
            return (await _client.CreateAsync(request, cancellationToken: cancellationToken)).Lease;
        });

    /// <param name="sync">Run garbage collection before returning, so freed content is really gone.</param>
    public Task DeleteAsync(string id, bool sync = false, CancellationToken cancellationToken = default) =>
        Rpc.Call($"leases.delete {id}", async () =>
            await _client.DeleteAsync(new DeleteRequest { Id = id, Sync = sync }, cancellationToken: cancellationToken));

    public Task<IReadOnlyList<Lease>> ListAsync(CancellationToken cancellationToken = default, params string[] filters) =>
        Rpc.Call<IReadOnlyList<Lease>>("leases.list", async () =>
        {
            var request = new ListRequest();
            request.Filters.Add(filters);
            return (await _client.ListAsync(request, cancellationToken: cancellationToken)).Leases.ToList();
        });

    /// <param name="type">"content", "snapshots/overlayfs", "ingests", ...</param>
    public Task AddResourceAsync(string leaseId, string type, string resourceId, CancellationToken cancellationToken = default) =>
        Rpc.Call($"leases.add-resource {leaseId}", async () =>
            await _client.AddResourceAsync(new AddResourceRequest { Id = leaseId, Resource = new Resource { Id = resourceId, Type = type } },
                cancellationToken: cancellationToken));

    public Task<IReadOnlyList<Resource>> ListResourcesAsync(string leaseId, CancellationToken cancellationToken = default) =>
        Rpc.Call<IReadOnlyList<Resource>>($"leases.list-resources {leaseId}", async () =>
            (await _client.ListResourcesAsync(new ListResourcesRequest { Id = leaseId }, cancellationToken: cancellationToken)).Resources.ToList());
}
