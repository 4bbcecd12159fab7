using KataAgent.Containerd;

namespace KataAgent.Images;

/// <summary>An import or pull would point an existing image name at other content, and replacing was not asked for.</summary>
public sealed class ImageNameTakenException(string name, string existingDigest, string newDigest)
    : InvalidOperationException($"image '{name}' already exists ({existingDigest}) and this would replace it with {newDigest}: " +
        "pass --replace (API: replace = true) to replace it, or give another name")
{
    public string Name { get; } = name;
}

/// <summary>
/// An archive or registry must not take over a name already on the agent (an archive tagged as the base image would
/// run in every session made from it) unless the caller asks to replace it. The same content under the same name
/// changes nothing and is always allowed, so importing or pulling again stays idempotent.
/// </summary>
public static class ImageNameGuard
{
    public static async Task EnsureMayPointAsync(ContainerdClient client, string name, string targetDigest, bool replace, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        if (replace)
            return;
        var existing = await client.Images.FindAsync(name, cancellationToken).ConfigureAwait(false);
        if (existing is not null && existing.Target.Digest != targetDigest)
            throw new ImageNameTakenException(name, existing.Target.Digest, targetDigest);
    }
}
