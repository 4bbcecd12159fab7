using System.Globalization;
using KataAgent.Core.Containers;
using KataAgent.Core.Scratch;
using KataAgent.Core.ScratchQuota;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Sessions;

/// <summary>
/// Full reap of a session: stop signal, grace period, SIGKILL, task, container, snapshot, CNI DEL,
/// staged mounts, netns, scratch (unless kept), ports, resources, record. The host parts are the container's (a claimed
/// warm-pool member keeps its container id under the session's kernel id); the record is the kernel id's. Idempotent: each part that is already
/// gone is skipped, so it also cleans up after a create that died half-way.
/// </summary>
public sealed class SessionDestroyer(SessionServices services)
{
    public async Task DestroyAsync(SessionRecord record, bool keepScratch, TimeSpan? grace = null, CancellationToken cancellationToken = default)
    {
        var failures = new List<Exception>();
        async Task Step(string name, Func<Task> action)
        {
            try
            {
                await action().ConfigureAwait(false);
            }
            // A tool's own timeout (nft, a CNI plugin) is a failed part like any other: only the caller's cancellation stops the destroy.
            catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                services.Logger.LogWarning(e, "destroy {KernelId}: {Step} failed", record.KernelId, name);
                lock (failures)
                    failures.Add(new InvalidOperationException($"{name}: {e.Message}", e));
            }
        }

        await Step("container", () => TaskReaper.ReapContainerAsync(services.Containerd, record.ContainerId, ParseSignal(record.StopSignal),
            grace ?? services.Options.StopGracePeriod, services.Logger, cancellationToken)).ConfigureAwait(false);
        await Step("log-relay", () =>
        {
            services.LogRelays.Stop(record.ContainerId, removeFifo: true);
            return Task.CompletedTask;
        }).ConfigureAwait(false);
        // After the container: nothing uses the staged mounts any more.
        await Step("mounts", () =>
        {
            if (ScratchDirectory.IsValidSessionId(record.ContainerId))
                services.MountStaging.Release(record.ContainerId);
            return Task.CompletedTask;
        }).ConfigureAwait(false);
        // CNI DEL (netns, iptables) and the scratch disk's unmount and loop release share nothing: side by side.
        await Task.WhenAll(
            Task.Run(() => Step("network", () => services.Network.DetachAsync(record.ContainerId, cancellationToken)), CancellationToken.None),
            RemoveScratchAsync()).ConfigureAwait(false);
        // After the DEL: portmap's rules for these host ports are gone before another session may take them.
        services.Ports.Release(record.Ports.Select(p => p.HostPort));
        services.Resources.Release(record.ContainerId);
        await Step("record", () =>
        {
            services.Store.Delete(record.KernelId);
            return Task.CompletedTask;
        }).ConfigureAwait(false);

        async Task RemoveScratchAsync()
        {
            // Before the scratch dir: the remover does not cross into a mounted disk.
            await Step("scratch-disk", async () =>
            {
                if (!keepScratch && ScratchDirectory.IsValidSessionId(record.ContainerId))
                {
                    await ScratchDisks.For(services.Options, services.Logger)
                        .UnmountAsync(record.ContainerId, ScratchDirectory.Open(services.Options.ScratchRoot, record.ContainerId).WorkPath, cancellationToken).ConfigureAwait(false);
                }
            }).ConfigureAwait(false);
            await Step("scratch", async () =>
            {
                if (ScratchDirectory.IsValidSessionId(record.ContainerId))
                    await ScratchDirectory.Open(services.Options.ScratchRoot, record.ContainerId).RemoveAsync(keepScratch, cancellationToken).ConfigureAwait(false);
            }).ConfigureAwait(false);
            await Step("log", () =>
            {
                if (!keepScratch && !string.IsNullOrEmpty(record.LogPath) && File.Exists(record.LogPath))
                    File.Delete(record.LogPath);
                return Task.CompletedTask;
            }).ConfigureAwait(false);
        }

        if (failures.Count > 0)
            throw new AggregateException($"destroying session {record.KernelId} left work undone", failures);
    }

    public static uint ParseSignal(string? signal)
    {
        if (string.IsNullOrWhiteSpace(signal))
            return TaskReaper.SigTerm;
        if (uint.TryParse(signal, NumberStyles.None, CultureInfo.InvariantCulture, out var number) && number is > 0 and < 65)
            return number;
        var name = signal.Trim().ToUpperInvariant();
        if (!name.StartsWith("SIG", StringComparison.Ordinal))
            name = "SIG" + name;
        return name switch
        {
            "SIGHUP" => 1,
            "SIGINT" => 2,
            "SIGQUIT" => 3,
            "SIGKILL" => 9,
            "SIGUSR1" => 10,
            "SIGUSR2" => 12,
            "SIGTERM" => 15,
            "SIGWINCH" => 28,
            "SIGPWR" => 30,
            _ => TaskReaper.SigTerm,
        };
    }
}
