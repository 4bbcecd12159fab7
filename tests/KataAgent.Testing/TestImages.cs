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
        var built = await BuildPythonAsync(cancellationToken);
        var imported = await new ImageImporter(client).ImportAsync(built.ArchivePath, cancellationToken: cancellationToken);
        return imported.Single();
    }

    /// <summary>The python base image's archive (built once, cached on disk).</summary>
    public static async Task<BuiltImage> BuildPythonAsync(CancellationToken cancellationToken = default)
    {
        await BuildGate.WaitAsync(cancellationToken);
        try
        {
            return await new BaseImageBuilder().BuildPythonAsync(cancellationToken: cancellationToken);
        }
        finally
        {
            BuildGate.Release();
        }
    }
}
