namespace KataAgent.Images;

/// <summary>The content labels containerd's garbage collector follows (as containerd's own image handlers set them).</summary>
public static class GcLabels
{
    public const string ContentConfig = "containerd.io/gc.ref.content.config";
    public const string ContentLayerPrefix = "containerd.io/gc.ref.content.l.";
    public const string ContentManifestPrefix = "containerd.io/gc.ref.content.m.";
    public const string SnapshotPrefix = "containerd.io/gc.ref.snapshot.";
    public const string Uncompressed = "containerd.io/uncompressed";

    /// <summary>Labels for a manifest blob: it references its config and layers.</summary>
    public static Dictionary<string, string> ForManifest(OciManifest manifest)
    {
        var labels = new Dictionary<string, string> { [ContentConfig] = manifest.Config.Digest };
        for (var i = 0; i < manifest.Layers.Count; i++)
        {
            labels[ContentLayerPrefix + i] = manifest.Layers[i].Digest;
        }

        return labels;
    }

    /// <summary>Label for a config blob: it references the unpacked snapshot of the image on a snapshotter.</summary>
    public static string SnapshotFor(string snapshotter) => SnapshotPrefix + snapshotter;
}
