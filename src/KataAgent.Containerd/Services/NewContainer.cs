using Containerd.Services.Containers.V1;
using KataAgent.Containerd.Runtime;

namespace KataAgent.Containerd.Services;

/// <summary>A container record to create, in terms the layers above use (no wire types).</summary>
public sealed record NewContainer(string Id, RuntimeClass Runtime, ReadOnlyMemory<byte> SpecJson)
{
    public string Image { get; init; } = "";
    public string Snapshotter { get; init; } = SnapshotsService.DefaultSnapshotter;
    public string SnapshotKey { get; init; } = "";
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();

    internal Container ToProto()
    {
        var container = new Container
        {
            Id = Id,
            Image = Image,
            Runtime = new Container.Types.Runtime { Name = Runtime.RuntimeType, Options = Runtime.Options },
            Spec = TypeUrls.PackJson(TypeUrls.RuntimeSpec, SpecJson.Span),
            Snapshotter = string.IsNullOrEmpty(SnapshotKey) ? "" : Snapshotter,
            SnapshotKey = SnapshotKey,
        };
        container.Labels.Add(Labels);
        return container;
    }
}
