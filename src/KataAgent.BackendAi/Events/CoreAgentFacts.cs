using System.Collections.Concurrent;
using KataAgent.Containerd;
using KataAgent.Core;
using KataAgent.Core.Sessions;
using KataAgent.Images;
using Microsoft.Extensions.Logging;

namespace KataAgent.BackendAi.Events;

/// <summary>Session labels that mark a session as the manager's.</summary>
public static class BackendAiSessionLabels
{
    /// <summary>Set to <see cref="ManagerValue"/> on sessions created through the Backend.AI RPC server.</summary>
    // Not under ai.backend. or io.kata-agent.: Core reserves those for its own labels and refuses them in requests.
    public const string ManagedBy = "backendai.managed-by";

    public const string ManagerValue = "backendai";

    /// <summary>
    /// True for a session the manager created. The manager's calls that act on "every kernel" (sync_kernel_registry,
    /// reset_agent) and the clean-up of kernels that die by themselves touch only these: sessions made through the
    /// local API on the same agent are not the manager's to destroy.
    /// </summary>
    public static bool IsManagers(SessionRecord? record) =>
        record?.Request?.Labels.TryGetValue(ManagedBy, out var by) == true && by == ManagerValue;
}

/// <summary>
/// The heartbeat's facts from the real agent: capacity from its resource allocator, images from its containerd
/// namespace (digest = the image config's digest, as Docker's image id the Python agent reports), and the sessions
/// the manager owns. Only those: the manager purges every container it does not know from a status heartbeat.
/// </summary>
public sealed class CoreAgentFacts(Agent agent, ILogger logger, Func<Session, bool>? isManagerSession = null) : IAgentFacts
{
    private readonly Func<Session, bool> _isManagerSession = isManagerSession ?? IsLabelledForManager;

    // target digest → config digest: inspecting reads content blobs, so each image is inspected once.
    private readonly ConcurrentDictionary<string, string> _configDigests = new(StringComparer.Ordinal);

    public IReadOnlyList<SlotCapacity> Slots
    {
        get
        {
            var capacity = agent.Resources.Capacity;
            return
            [
                new SlotCapacity("cpu", "count", decimal.Round((decimal)capacity.Cpus, 3)),
                new SlotCapacity("mem", "bytes", capacity.MemoryBytes),
            ];
        }
    }

    public async Task<IReadOnlyList<AgentImage>> ListImagesAsync(CancellationToken cancellationToken)
    {
        var result = new List<AgentImage>();
        var inspector = new ImageInspector(agent.Containerd);
        foreach (var image in await agent.Containerd.Images.ListAsync(cancellationToken).ConfigureAwait(false))
        {
            var target = image.Target?.Digest;
            if (string.IsNullOrEmpty(target))
                continue;
            if (!_configDigests.TryGetValue(target, out var digest))
            {
                try
                {
                    digest = (await inspector.InspectAsync(image.Name, cancellationToken: cancellationToken).ConfigureAwait(false)).ConfigDescriptor.Digest;
                    _configDigests[target] = digest;
                }
                catch (Exception e) when (e is ContainerdException or InvalidOperationException or System.Text.Json.JsonException)
                {
                    // Another platform or missing content: the manager cannot run it here anyway.
                    logger.LogDebug("heartbeat leaves out image {Image}: {Message}", image.Name, e.Message);
                    continue;
                }
            }
            result.Add(new AgentImage(image.Name, digest));
        }
        return result;
    }

    public IReadOnlyList<AgentContainer> Containers =>
        agent.Sessions
            .Where(s => Guid.TryParse(s.KernelId, out _) && _isManagerSession(s))
            .Select(s => new AgentContainer(Guid.Parse(s.KernelId), s.Record.ContainerId, StatusOf(s.State)))
            .ToList();

    private static bool IsLabelledForManager(Session session) => BackendAiSessionLabels.IsManagers(session.Record);

    /// <summary>Backend.AI's ContainerStatus for a session state.</summary>
    public static string StatusOf(SessionState state) => state switch
    {
        // Not in the status heartbeat's active set (running, restarting, paused): the manager would not expect it yet.
        SessionState.Creating => "created",
        SessionState.Running => "running",
        SessionState.Paused => "paused",
        SessionState.Exited => "exited",
        SessionState.Destroying => "removing",
        _ => "dead",
    };
}
