using System.Globalization;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.ScratchQuota;

/// <summary>
/// A hard size limit on a session's work dir: a sparse ext4 image per session
/// (<c>DATA_DIR/scratch-disks/&lt;id&gt;.ext4</c>), loop-mounted nosuid,nodev over the work dir before the
/// container starts. Writes past it fail with ENOSPC inside the session's own filesystem, whatever the
/// host's filesystem is (the data dir here is ext4 without prjquota, so project quotas are not available,
/// and tmpfs would count against RAM). The image only takes the host blocks actually written; with
/// <c>discard</c> the blocks of deleted files go back to the host. Why this and not the others: docs/DISK.md.
/// </summary>
public sealed class ScratchDisks(string imageDir, string scratchRoot, ILogger logger)
{
    /// <summary>Smallest disk the agent makes: below it ext4's own metadata is a large share.</summary>
    public const long MinimumBytes = 16L << 20;
    public const string ImageExtension = ".ext4";

    public string ImageDir { get; } = Path.GetFullPath(imageDir);
    public string ScratchRoot { get; } = Path.GetFullPath(scratchRoot);

    public static ScratchDisks For(AgentOptions options, ILogger logger) => new(options.ScratchDiskDir, options.ScratchRoot, logger);

    public string ImagePath(string sessionId) => Path.Combine(ImageDir, sessionId + ImageExtension);

    /// <summary>
    /// Makes the session's disk and mounts it at <paramref name="workPath"/> (an empty directory), its root owned by
    /// <paramref name="uid"/>:<paramref name="gid"/>, mode 0755. Leaves nothing behind when it fails.
    /// </summary>
    public async Task MountAsync(string sessionId, string workPath, long sizeBytes, int uid, int gid, CancellationToken cancellationToken)
    {
        Scratch.ScratchDirectory.ValidateSessionId(sessionId);
        if (sizeBytes < MinimumBytes)
            throw new ArgumentOutOfRangeException(nameof(sizeBytes), $"scratch disk of {sizeBytes} bytes is below the {MinimumBytes >> 20} MiB minimum");
        var image = ImagePath(sessionId);
        Directory.CreateDirectory(ImageDir, (UnixFileMode)0x1C0); // 0700: the images hold the sessions' files
        try
        {
            // CreateNew: a leftover image of the same id is never reused (orphan cleanup removes it).
            var file = new FileStream(image, new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                UnixCreateMode = (UnixFileMode)0x180,
            });
            await using (file.ConfigureAwait(false))
            {
                file.SetLength(sizeBytes); // sparse: costs no host blocks yet
            }
            // No journal and lazy inode tables: mkfs of a 16 GiB image writes about 4 MiB and takes well under a second.
            // -m 0: no blocks reserved for root; the session's uid may be 0.
            await HostCommand.RunCheckedAsync("mkfs.ext4", ["-q", "-F", "-m", "0", "-O", "^has_journal",
                "-E", string.Create(CultureInfo.InvariantCulture, $"lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner={uid}:{gid}"),
                image], cancellationToken).ConfigureAwait(false);
            // mount(8) sets up the loop device with autoclear: the device goes with the last unmount.
            await HostCommand.RunCheckedAsync("mount", ["-t", "ext4", "-o", "loop,nosuid,nodev,discard", image, workPath], cancellationToken)
                .ConfigureAwait(false);
            File.SetUnixFileMode(workPath, (UnixFileMode)0x1ED); // 0755, as the work dir it covers
            var lostFound = Path.Combine(workPath, "lost+found");
            if (Directory.Exists(lostFound))
                Directory.Delete(lostFound); // fsck's corner has no place in the user's home
        }
        catch
        {
            await UnmountAsync(sessionId, workPath, CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Unmounts the session's disk from <paramref name="workPath"/> (if mounted), detaches its loop device and deletes
    /// its image. Idempotent: whatever is already gone is skipped.
    /// </summary>
    public async Task UnmountAsync(string sessionId, string workPath, CancellationToken cancellationToken)
    {
        Scratch.ScratchDirectory.ValidateSessionId(sessionId);
        await UnmountAllAtAsync(workPath, cancellationToken).ConfigureAwait(false);
        await RemoveImageAsync(ImagePath(sessionId), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>After a kill -9: every scratch disk (mount, loop device, image) whose session is not in <paramref name="known"/> goes.</summary>
    public async Task CleanOrphansAsync(IReadOnlySet<string> known, CancellationToken cancellationToken)
    {
        foreach (var mount in HostMounts.MountPointsUnder(ScratchRoot))
        {
            var sessionId = Path.GetRelativePath(ScratchRoot, mount).Split('/')[0];
            if (known.Contains(sessionId))
                continue;
            logger.LogInformation("unmounting scratch disk {Mount} of vanished session {KernelId}", mount, sessionId);
            await UnmountAllAtAsync(mount, cancellationToken).ConfigureAwait(false);
        }
        if (!Directory.Exists(ImageDir))
            return;
        foreach (var image in Directory.EnumerateFiles(ImageDir).ToList())
        {
            var name = Path.GetFileName(image);
            var sessionId = name.EndsWith(ImageExtension, StringComparison.Ordinal) ? name[..^ImageExtension.Length] : name;
            if (known.Contains(sessionId))
                continue;
            logger.LogInformation("removing scratch disk image {Image} of vanished session {KernelId}", image, sessionId);
            await RemoveImageAsync(image, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Mounts below the scratch root (the session disks), for the leak census.</summary>
    public IReadOnlyList<string> Mounts() => HostMounts.MountPointsUnder(ScratchRoot);

    /// <summary>Loop devices backed by a file in the image dir, for the leak census.</summary>
    public IReadOnlyList<string> LoopDevices() =>
        HostMounts.LoopDevices().Where(l => IsOurImage(l.BackingFile)).Select(l => $"{l.Device}: {l.BackingFile}").ToList();

    /// <summary>Image files, for the leak census.</summary>
    public IReadOnlyList<string> Images() => Directory.Exists(ImageDir) ? Directory.GetFiles(ImageDir).Select(Path.GetFileName).OfType<string>().ToList() : [];

    private bool IsOurImage(string path) => path.StartsWith(ImageDir + "/", StringComparison.Ordinal);

    private async Task UnmountAllAtAsync(string mountPoint, CancellationToken cancellationToken)
    {
        var full = Path.GetFullPath(mountPoint).TrimEnd('/');
        // Stacked mounts (a retry that mounted twice) come off one by one.
        for (var i = 0; i < 8 && HostMounts.IsMountPoint(full); i++)
        {
            var (exit, output) = await HostCommand.RunAsync("umount", [full], cancellationToken).ConfigureAwait(false);
            if (exit == 0)
                continue;
            // Busy (a process of ours still has a file open in it): detach now; the kernel frees it with the last user.
            logger.LogWarning("umount {Mount} failed ({Output}); detaching it lazily", full, output);
            await HostCommand.RunCheckedAsync("umount", ["--lazy", full], cancellationToken).ConfigureAwait(false);
        }
        if (HostMounts.IsMountPoint(full))
            throw new IOException($"scratch disk at {full} is still mounted after unmounting it");
    }

    private async Task RemoveImageAsync(string image, CancellationToken cancellationToken)
    {
        // A loop device without a mount (the agent died between attaching and mounting) is not autocleared.
        foreach (var (device, _) in HostMounts.LoopDevices().Where(l => l.BackingFile == image))
        {
            var (exit, output) = await HostCommand.RunAsync("losetup", ["--detach", device], cancellationToken).ConfigureAwait(false);
            if (exit != 0)
                logger.LogWarning("losetup --detach {Device} ({Image}) failed: {Output}", device, image, output);
        }
        // A session made without a quota (or an agent that never made a disk) has no image, nor maybe the folder.
        if (File.Exists(image))
            File.Delete(image);
        await WaitForLoopReleaseAsync(image, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Autoclear (and a detach of a device still open) frees the loop device only when its last opener closes it, and
    /// udev's probe of the unmounted device may hold it for a moment after umount returns. Destroy promises nothing is
    /// left when it returns, so it waits for the release (bounded) rather than reporting success early.
    /// </summary>
    private async Task WaitForLoopReleaseAsync(string image, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + LoopReleaseTimeout;
        while (HostMounts.LoopDevices().Any(l => l.BackingFile == image))
        {
            if (DateTime.UtcNow > deadline)
            {
                logger.LogWarning("loop device of {Image} still attached {Timeout} after its detach; the kernel frees it with its last user", image, LoopReleaseTimeout);
                return;
            }
            await Task.Delay(20, cancellationToken).ConfigureAwait(false);
        }
    }

    private static readonly TimeSpan LoopReleaseTimeout = TimeSpan.FromSeconds(10);
}
