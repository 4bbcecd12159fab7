using System.Collections.Concurrent;

namespace KataAgent.Core.Commit;

/// <summary>The latest commit status per session; at most one running commit per session.</summary>
public sealed class CommitTracker
{
    private readonly ConcurrentDictionary<string, CommitStatus> _statuses = new(StringComparer.Ordinal);
    private readonly object _gate = new();

    public CommitStatus Get(string kernelId) =>
        _statuses.TryGetValue(kernelId, out var status) ? status : new CommitStatus(kernelId, CommitPhase.Idle);

    /// <summary>Runs <paramref name="commit"/> as the session's commit, publishing its phases; refuses a second concurrent one.</summary>
    public async Task<CommittedImage> RunAsync(string kernelId, string imageName,
        Func<Action<CommitPhase>, Task<CommittedImage>> commit)
    {
        var started = DateTimeOffset.UtcNow;
        lock (_gate)
        {
            if (_statuses.TryGetValue(kernelId, out var current) && current.IsActive)
                throw new CommitInProgressException(kernelId, current.ImageName ?? "");
            _statuses[kernelId] = new CommitStatus(kernelId, CommitPhase.Preparing, imageName, started);
        }
        void Report(CommitPhase phase) =>
            _statuses[kernelId] = new CommitStatus(kernelId, phase, imageName, started);
        try
        {
            var result = await commit(Report).ConfigureAwait(false);
            _statuses[kernelId] = new CommitStatus(kernelId, CommitPhase.Done, imageName, started, DateTimeOffset.UtcNow, Result: result);
            return result;
        }
        catch (Exception e)
        {
            _statuses[kernelId] = new CommitStatus(kernelId, CommitPhase.Failed, imageName, started, DateTimeOffset.UtcNow, e.Message);
            throw;
        }
    }
}
