using KataAgent.Containerd;
using KataAgent.Images;

namespace KataAgent.Testing;

/// <summary>The project's base images, built once (cached on disk) and imported into a test's containerd.</summary>
public static class TestImages
{
    private static readonly SemaphoreSlim BuildGate = new(1, 1);

    /// <summary>debootstrap'ed Debian 12 + python3 (about a minute the first time, cached afterwards).</summary>
    public static async Task<ImportedImage> ImportPythonAsync(ContainerdClient client, CancellationToken cancellationToken = default)
    {
        BuiltImage built;
        await BuildGate.WaitAsync(cancellationToken);
        try
        {
            built = await new BaseImageBuilder().BuildPythonAsync(cancellationToken: cancellationToken);
        }
        finally
        {
            BuildGate.Release();
        }
        var imported = await new ImageImporter(client).ImportAsync(built.ArchivePath, cancellationToken: cancellationToken);
        return imported.Single();
    }
}
