using KataAgent.Containerd;

namespace KataAgent.Testing;

/// <summary>What a test left behind in containerd and in /proc.</summary>
public sealed record LeakCensus(
    IReadOnlyList<string> Tasks,
    IReadOnlyList<string> Containers,
    IReadOnlyList<string> ActiveSnapshots,
    IReadOnlyList<string> Leases,
    IReadOnlyList<string> Shims)
{
    public bool IsClean => Tasks.Count + Containers.Count + ActiveSnapshots.Count + Leases.Count + Shims.Count == 0;

    public override string ToString() =>
        $"tasks=[{string.Join(",", Tasks)}] containers=[{string.Join(",", Containers)}] active-snapshots=[{string.Join(",", ActiveSnapshots)}] " +
        $"leases=[{string.Join(",", Leases)}] shims=[{string.Join(" | ", Shims)}]";

    /// <summary>Committed snapshots belong to images; active and view ones belong to containers or unfinished work.</summary>
    public static async Task<LeakCensus> TakeAsync(ContainerdClient client, string containerdSocket, CancellationToken cancellationToken = default)
    {
        var tasks = (await client.Tasks.ListAsync(cancellationToken: cancellationToken)).Select(t => t.ContainerId).ToList();
        var containers = (await client.Containers.ListAsync(cancellationToken)).Select(c => c.Id).ToList();
        var snapshots = (await client.Snapshots.ListAsync(cancellationToken: cancellationToken))
            .Where(s => s.Kind != global::Containerd.Services.Snapshots.V1.Kind.Committed).Select(s => s.Name).ToList();
        var leases = (await client.Leases.ListAsync(cancellationToken)).Select(l => l.Id).ToList();
        // Shims exit a moment after their last task is deleted.
        IReadOnlyList<(int Pid, string CommandLine)> shims = [];
        for (var attempt = 0; attempt < 50; attempt++)
        {
            shims = ProcessTable.ShimsOf(containerdSocket);
            if (shims.Count == 0)
                break;
            await Task.Delay(100, cancellationToken);
        }
        return new LeakCensus(tasks, containers, snapshots, leases, shims.Select(s => $"{s.Pid}: {s.CommandLine}").ToList());
    }
}
