using KataAgent.Core.Commit;

namespace KataAgent.Core;

/// <summary>Committing a session's filesystem changes to an image (Commit/).</summary>
public sealed partial class Agent
{
    private readonly CommitTracker _commits = new();
    private SessionCommitter? _committer;

    public SessionCommitter Committer =>
        LazyInitializer.EnsureInitialized(ref _committer, () => new SessionCommitter(Containerd, Services.Images, _logger));

    /// <summary>
    /// Commits the session's filesystem changes as a new image named <paramref name="imageName"/>, ready for new
    /// sessions. A running session is paused while its changes are read, and resumed after. Fails with
    /// <see cref="ImageExistsException"/> when the name is taken, unless <paramref name="replace"/>; a failed commit
    /// registers nothing. A session paused by <see cref="PauseSessionAsync"/> is committed as it is and stays paused
    /// (the committer only thaws what it froze); a pause or resume asked for during the commit waits for it to end.
    /// </summary>
    public Task<CommittedImage> CommitAsync(string kernelId, string imageName, bool replace = false, CancellationToken cancellationToken = default)
    {
        var session = GetSession(kernelId);
        return _commits.RunAsync(session.KernelId, imageName,
            report => WhileFrozenGateHeldAsync(session,
                () => Committer.CommitAsync(session.Record, imageName, replace, report, cancellationToken), cancellationToken));
    }

    /// <summary>The session's running or latest commit (phase <see cref="CommitPhase.Idle"/> when none ran).</summary>
    public CommitStatus GetCommitStatus(string kernelId) => _commits.Get(kernelId);
}
