using System.Text;
using KataAgent.Containerd;
using KataAgent.Images;
using KataAgent.Oci;

namespace KataAgent.Testing;

/// <summary>A file the derived image's extra layer adds, owned by root.</summary>
public sealed record DerivedFile(byte[] Content, UnixFileMode Mode)
{
    /// <summary>A UTF-8 text file, 0644 unless <paramref name="mode"/> says otherwise.</summary>
    public static DerivedFile Text(string content, UnixFileMode mode = (UnixFileMode)0b110_100_100) => new(Encoding.UTF8.GetBytes(content), mode);

    /// <summary>A UTF-8 text file with mode 0755.</summary>
    public static DerivedFile Executable(string content) => Text(content, (UnixFileMode)0b111_101_101);
}

/// <summary>What a derived image is made of: the python base image plus one layer (none without files) and changed config labels/env.</summary>
public sealed record DerivedImageSpec
{
    /// <summary>The name the image gets in the test's containerd (an existing image of that name is replaced).</summary>
    public required string Name { get; init; }

    /// <summary>Absolute path in the image → content and mode. Parent directories are made 0755 root.</summary>
    public IReadOnlyDictionary<string, DerivedFile> Files { get; init; } = new Dictionary<string, DerivedFile>();

    /// <summary>Config labels to set (overriding the base image's); a null value removes the label.</summary>
    public IReadOnlyDictionary<string, string?> Labels { get; init; } = new Dictionary<string, string?>();

    /// <summary>KEY=VALUE entries added to the config's Env, replacing the base image's entry of the same key.</summary>
    public IReadOnlyList<string> Env { get; init; } = [];
}

/// <summary>
/// Builds test images FROM the python base image (<see cref="TestImages"/>' cached archive) with one extra layer made
/// of given files and changed labels/env, using the project's own image code: <see cref="OciArchive"/> reads the base,
/// <see cref="RootfsLayerWriter"/> packs the layer, <see cref="OciLayoutWriter"/> writes the layout and
/// <see cref="ImageImporter"/> imports it. Files get mtime 0, so the same spec gives the same image digest.
/// Its temporary directory is removed whatever happens.
/// </summary>
public static class DerivedImages
{
    /// <summary>Builds the image of <paramref name="spec"/> and imports it (unpacked) into <paramref name="client"/>'s namespace.</summary>
    public static async Task<ImportedImage> ImportAsync(ContainerdClient client, DerivedImageSpec spec, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(spec);
        var baseImage = await TestImages.BuildPythonAsync(cancellationToken);
        var work = Directory.CreateTempSubdirectory("kata-derived-image-");
        try
        {
            var archivePath = Path.Combine(work.FullName, "image.oci.tar");
            await WriteArchiveAsync(baseImage.ArchivePath, spec, work.FullName, archivePath, cancellationToken);
            var imported = await new ImageImporter(client).ImportAsync(archivePath, new ImportOptions { Name = spec.Name, Replace = true }, cancellationToken);
            return imported.Single();
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    /// <summary>Writes the derived image's OCI layout tar to <paramref name="archivePath"/>, using <paramref name="work"/> for the base layers and the new one.</summary>
    public static async Task WriteArchiveAsync(string baseArchivePath, DerivedImageSpec spec, string work, string archivePath, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        await using var archive = await OciArchive.OpenAsync(baseArchivePath, cancellationToken: cancellationToken);
        var image = archive.SingleImage;
        var layers = new List<LayerBlob>();
        for (var i = 0; i < image.Layers.Count; i++)
        {
            var descriptor = image.Layers[i];
            var path = Path.Combine(work, $"base-layer-{i}");
            await using (var source = archive.OpenBlob(descriptor))
            await using (var target = File.Create(path))
            {
                await source.CopyToAsync(target, cancellationToken);
            }
            layers.Add(new LayerBlob(descriptor, image.DiffIds[i], path));
        }

        // No files, no layer (an empty tar is not a layer containerd applies): the image differs in its config alone.
        if (spec.Files.Count > 0)
        {
            var rootfs = Path.Combine(work, "rootfs");
            Directory.CreateDirectory(rootfs);
            foreach (var (guestPath, file) in spec.Files)
                WriteFile(rootfs, guestPath, file);
            var layerPath = Path.Combine(work, "layer.tar.gz");
            var layer = await RootfsLayerWriter.WriteFileAsync(rootfs, layerPath,
                new LayerWriterOptions { ClampModificationTime = DateTimeOffset.UnixEpoch }, cancellationToken);
            layers.Add(LayerBlob.FromInfo(layer, layerPath));
        }

        var config = ImageConfig.Parse(image.Config.ToJson());
        config.Config ??= new ImageRuntimeConfig();
        var labels = config.Config.Labels ??= [];
        foreach (var (key, value) in spec.Labels)
        {
            if (value is null)
                labels.Remove(key);
            else
                labels[key] = value;
        }
        var env = config.Config.Env ??= [];
        foreach (var entry in spec.Env)
        {
            var key = entry.Split('=', 2)[0];
            env.RemoveAll(e => e.Split('=', 2)[0] == key);
            env.Add(entry);
        }
        (config.History ??= []).Add(new ImageHistory { CreatedBy = $"kata-agent test DerivedImages: {spec.Files.Count} files, {spec.Labels.Count} labels" });
        await OciLayoutWriter.WriteFileAsync(archivePath, config, layers, spec.Name, cancellationToken: cancellationToken);
    }

    private static void WriteFile(string rootfs, string guestPath, DerivedFile file)
    {
        if (!guestPath.StartsWith('/') || guestPath.EndsWith('/') || guestPath.Split('/').Any(part => part is "." or ".."))
            throw new ArgumentException($"derived image file '{guestPath}' must be an absolute file path without '.' or '..'", nameof(guestPath));
        var parts = guestPath.TrimStart('/').Split('/', StringSplitOptions.RemoveEmptyEntries);
        var directory = rootfs;
        foreach (var part in parts[..^1])
        {
            directory = Path.Combine(directory, part);
            if (!Directory.Exists(directory))
            {
                Directory.CreateDirectory(directory);
                File.SetUnixFileMode(directory, (UnixFileMode)0b111_101_101);
            }
        }
        var path = Path.Combine(directory, parts[^1]);
        File.WriteAllBytes(path, file.Content);
        File.SetUnixFileMode(path, file.Mode);
    }
}
