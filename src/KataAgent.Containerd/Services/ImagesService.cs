using Containerd.Services.Images.V1;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;

namespace KataAgent.Containerd.Services;

public sealed class ImagesService(CallInvoker invoker)
{
    private readonly Images.ImagesClient _client = new(invoker);

    public Task<Image> GetAsync(string name, CancellationToken cancellationToken = default) =>
        Rpc.Call($"images.get {name}", async () =>
            (await _client.GetAsync(new GetImageRequest { Name = name }, cancellationToken: cancellationToken)).Image);

    public async Task<Image?> FindAsync(string name, CancellationToken cancellationToken = default)
    {
        try
        {
            return await GetAsync(name, cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException)
        {
            return null;
        }
    }

    public Task<IReadOnlyList<Image>> ListAsync(CancellationToken cancellationToken = default, params string[] filters) =>
        Rpc.Call<IReadOnlyList<Image>>("images.list", async () =>
        {
            var request = new ListImagesRequest();
            request.Filters.Add(filters);
            return (await _client.ListAsync(request, cancellationToken: cancellationToken)).Images.ToList();
        });

    public Task<Image> CreateAsync(Image image, CancellationToken cancellationToken = default) =>
        Rpc.Call($"images.create {image.Name}", async () =>
            (await _client.CreateAsync(new CreateImageRequest { Image = image }, cancellationToken: cancellationToken)).Image);

    public Task<Image> UpdateAsync(Image image, IEnumerable<string>? fieldPaths = null, CancellationToken cancellationToken = default) =>
        Rpc.Call($"images.update {image.Name}", async () =>
        {
            var request = new UpdateImageRequest { Image = image };
            if (fieldPaths is not null)
                request.UpdateMask = new FieldMask { Paths = { fieldPaths } };
            return (await _client.UpdateAsync(request, cancellationToken: cancellationToken)).Image;
        });

    /// <summary>Creates the record, or points an existing one at the new target.</summary>
    public async Task<Image> CreateOrUpdateAsync(Image image, CancellationToken cancellationToken = default)
    {
        try
        {
            return await CreateAsync(image, cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdAlreadyExistsException)
        {
            return await UpdateAsync(image, ["target", "labels"], cancellationToken).ConfigureAwait(false);
        }
    }

    /// <param name="sync">Wait for garbage collection to finish before returning.</param>
    public Task DeleteAsync(string name, bool sync = false, CancellationToken cancellationToken = default) =>
        Rpc.Call($"images.delete {name}", async () =>
            await _client.DeleteAsync(new DeleteImageRequest { Name = name, Sync = sync }, cancellationToken: cancellationToken));
}
