using KataAgent.Containerd;
using KataAgent.Containerd.Private;
using KataAgent.Core.Cgroups;
using KataAgent.Core.Events;
using KataAgent.Core.HostDirectories;
using KataAgent.Core.Locking;
using KataAgent.Core.Reconciliation;
using KataAgent.Core.Registry;
using KataAgent.Core.Resources;
using KataAgent.Core.Runtime;
using KataAgent.Core.Scratch;
using KataAgent.Core.Sessions;
using KataAgent.Images;
using KataAgent.Network;
using KataAgent.Network.Isolation;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core;

/// <summary>
/// The agent: sessions on top of containerd, CNI and the kernel runner. One per host. Starts (or
/// connects to) containerd, recovers the sessions it finds, and follows containerd's events.
/// The facade the API and CLI use: the sessions and their events live in <see cref="SessionRegistry"/>,
/// recovery and reconciliation in <see cref="SessionReconciler"/>.
/// </summary>
public sealed partial class Agent : IAsyncDisposable
{
    private readonly SessionRegistry _registry;
    private readonly SessionReconciler _reconciler;
    private readonly CancellationTokenSource _stop = new();
    private PrivateContainerd? _privateContainerd;
    private readonly DataDirLock _dataDirLock;
    private readonly TaskEventMonitor _monitor;
    private readonly Diagnostics.ProcessExitWatcher _exitWatcher;
    private readonly ILogger _logger;
    private Task? _eventPump;
    private Task? _reconcileLoop;
    private int _disposed;

    private Agent(AgentOptions options, SessionServices services, PrivateContainerd? privateContainerd, DataDirLock dataDirLock, ILogger logger)
    {
        _dataDirLock = dataDirLock;
        Options = options;
        Services = services;
        _privateContainerd = privateContainerd;
        _logger = logger;
        _monitor = new TaskEventMonitor(services.Containerd, logger);
        _exitWatcher = new Diagnostics.ProcessExitWatcher(logger);
        Creator = new SessionCreator(services);
        Destroyer = new SessionDestroyer(services);
        _registry = new SessionRegistry(logger, options.EndedSessionRetention, options.EndedSessionMaxCount);
        _reconciler = new SessionReconciler(options, services, Destroyer, _registry,
            (kernelId, cancellationToken) => DestroySessionAsync(kernelId, false, DestroyedBy.Reconcile, cancellationToken), logger);
    }

    public AgentOptions Options { get; }
    public SessionServices Services { get; }
    public SessionCreator Creator { get; }
    public SessionDestroyer Destroyer { get; }
    public ContainerdClient Containerd => Services.Containerd;
    public RuntimeClassRegistry RuntimeClasses => Services.RuntimeClasses;
    public ResourceAllocator Resources => Services.Resources;

    public static async Task<Agent> StartAsync(AgentOptions options, ILoggerFactory loggerFactory, CancellationToken cancellationToken = default)
    {
        var logger = loggerFactory.CreateLogger("kata-agent");
        if (string.IsNullOrEmpty(options.RunnerDir) || !File.Exists(Path.Combine(options.RunnerDir, "kata-runner")))
            throw new InvalidOperationException($"the kernel runner is not published in '{options.RunnerDir}': run scripts/publish-runner.sh (scripts/setup.sh does)");
        CheckPortRange(options);
        DataDirPermissions.SecureDataDir(options.DataDir);
        // Before containerd, records, CNI or scratch are touched: two agents on one data dir undo each other's work.
        var dataDirLock = DataDirLock.Acquire(options.DataDir, options.LockHolder);
        PrivateContainerd? privateContainerd = null;
        try
        {
            DataDirPermissions.SecureChildren(options);
            // Before any session shares it with a guest: nothing a guest leaves there is setuid or a device on the host.
            if (ScratchRootMount.Ensure(options.ScratchRoot) is not ScratchRootMountResult.AlreadyHardened and var done)
                logger.LogInformation("scratch root {Path}: {Done} (nosuid,nodev)", options.ScratchRoot, done);
            string socket;
            if (options.ContainerdAddress is { Length: > 0 } address)
            {
                socket = address;
            }
            else
            {
                privateContainerd = await PrivateContainerd.StartAsync(new PrivateContainerdOptions(Path.Combine(options.DataDir, "containerd")), cancellationToken)
                    .ConfigureAwait(false);
                socket = privateContainerd.SocketPath;
            }

            var client = ContainerdClient.Connect(socket, options.Namespace);
            await client.Namespaces.EnsureAsync(options.Namespace, cancellationToken).ConfigureAwait(false);
            var runtimeClasses = await RuntimeClassRegistry.CreateAsync(options, cancellationToken).ConfigureAwait(false);
            if (runtimeClasses.FallbackWarning is { } warning)
                logger.LogWarning("{Warning}", warning);
            var resolvers = options.Dns.Count > 0
                ? options.Dns.Select(System.Net.IPAddress.Parse).ToList()
                : NetworkGuard.NameserversOf("/etc/resolv.conf");
            var network = new SessionNetwork(new SessionNetworkOptions
            {
                Network = new CniNetworkSettings
                {
                    NetworkName = options.NetworkName,
                    BridgeName = options.BridgeName,
                    Subnet = options.Subnet,
                    IpMasq = options.IpMasquerade,
                },
                PluginDirectories = [options.CniPluginDir],
                Guard = new NetworkGuardOptions
                {
                    BridgeName = options.BridgeName,
                    Subnet = options.Subnet,
                    Resolvers = resolvers,
                    DenyCidrs = options.DenyCidrs,
                },
                NetnsPrefix = options.NetnsPrefix,
                StateDirectory = Path.Combine(options.StateDir, "network"),
            }, logger);
            var cgroups = SessionCgroupParent.ForHost(options.CgroupParent, logger);
            await cgroups.EnsureAsync(cancellationToken).ConfigureAwait(false);
            var services = new SessionServices(options, client, new ImageInspector(client), runtimeClasses,
                new ResourceAllocator(options.Resources), new HostPortPool(options.PortRangeStart, options.PortRangeEnd),
                network, new SessionStore(Path.Combine(options.StateDir, "sessions")), cgroups, logger)
            {
                Resolvers = resolvers,
                LogRelays = new Logs.LogRelays(options.LogDir, options.SessionLogMaxBytes, logger),
            };
            // Walls up before any session is recovered or created; recovered sessions are walled in again.
            await network.SyncGuardAsync(cancellationToken).ConfigureAwait(false);
            var agent = new Agent(options, services, privateContainerd, dataDirLock, logger);
            await agent.StartBackgroundAsync(cancellationToken).ConfigureAwait(false);
            return agent;
        }
        catch
        {
            if (privateContainerd is not null)
                await privateContainerd.DisposeAsync().ConfigureAwait(false);
            dataDirLock.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Published ports must stay out of the kernel's ephemeral range: a local client that happens to
    /// get such a port as its own (NetMQ connects to itself that way) would be DNAT'ed into a session.
    /// </summary>
    private static void CheckPortRange(AgentOptions options)
    {
        const string path = "/proc/sys/net/ipv4/ip_local_port_range";
        if (!File.Exists(path))
            return;
        var bounds = File.ReadAllText(path).Split((char[])['\t', ' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
        if (bounds.Length == 2 && int.TryParse(bounds[0], out var low) && int.TryParse(bounds[1], out var high) &&
            options.PortRangeStart <= high && options.PortRangeEnd >= low)
        {
            throw new ArgumentException($"the session port range {options.PortRangeStart}-{options.PortRangeEnd} overlaps the kernel's ephemeral port range {low}-{high} ({path}); choose ports outside it (default 30000-31000)", nameof(options));
        }
    }

    private async Task StartBackgroundAsync(CancellationToken cancellationToken)
    {
        await _monitor.StartAsync(cancellationToken).ConfigureAwait(false);
        _eventPump = Task.Run(() => PumpEventsAsync(_stop.Token), CancellationToken.None);
        _monitor.Resubscribed += () => _reconciler.ReconcileAfterGapAsync(_stop.Token);
        await _reconciler.RecoverAsync(cancellationToken).ConfigureAwait(false);
        foreach (var recovered in _registry.Sessions)
            WatchSandboxProcesses(recovered);
        _ = Task.Run(() => ResumeRunsAsync(_stop.Token), CancellationToken.None);
        if (Options.ReconcileInterval > TimeSpan.Zero)
            _reconcileLoop = Task.Run(() => _reconciler.RunLoopAsync(Options.ReconcileInterval, _stop.Token), CancellationToken.None);
        StartTimeoutLoop();
        StartPools();
    }

    private async Task PumpEventsAsync(CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var e in _monitor.Events.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                if (!TryGetByContainer(e.ContainerId, out var session))
                {
                    NotePoolMemberEvent(e);
                    continue;
                }
                switch (e)
                {
                    case TaskExited exited when session.TryTransition(SessionState.Exited, exited.ExitCode):
                        var reason = session.SetEndReason(await SandboxDeathAsync(session, exited, cancellationToken).ConfigureAwait(false)
                            ?? SessionEndReason.FromExitStatus(exited.ExitCode, session.OutOfMemory, session.Record.MemoryBytes, exited.At));
                        _registry.Publish(new SessionEvent(session.KernelId, "exited", SessionState.Exited, exited.ExitCode, exited.At,
                            reason.Describe(), reason));
                        break;
                    case TaskOutOfMemory oom:
                        OnOutOfMemoryEvent(session, oom.At);
                        break;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>
    /// The shim or runsc sandbox of the session that is gone at its task's exit: containerd reported the exit of a task
    /// whose sandbox died (a shim killed from the host reads as 137 otherwise, like a SIGKILL from inside).
    /// </summary>
    private static string? DeadSandbox(Session session) =>
        session.SandboxProcesses.FirstOrDefault(p => p.Role == Diagnostics.SandboxProcess.ShimRole && !p.IsAlive()) is { } dead
            ? $"{dead.Role} pid {dead.Pid} gone"
            : null;

    private void FindSandboxProcesses(Session session)
    {
        session.SandboxProcesses = Diagnostics.SandboxProcess.FindFor(Options.Namespace, session.Record.ContainerId);
        WatchSandboxProcesses(session);
    }

    /// <summary>
    /// Lifecycle events from now on: the subscription is registered before this returns, so nothing
    /// published after the call is missed. Read it with <see cref="SessionSubscription.ReadAllAsync"/>; dispose it to stop.
    /// </summary>
    public SessionSubscription Subscribe() => _registry.Subscribe();

    public async Task<Session> CreateSessionAsync(SessionRequest request, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        request = request with { KernelId = request.KernelId ?? Guid.NewGuid().ToString("N") };
        SessionTimeouts.Validate(request);
        if (_registry.Contains(request.KernelId) || !_registry.TryBeginCreating(request.KernelId))
            throw new SessionRequestException($"a session with kernel id '{request.KernelId}' already exists");
        Session session;
        try
        {
            session = await CreatePooledOrColdAsync(request, progress, cancellationToken).ConfigureAwait(false);
            session.Timeouts = SessionTimeouts.For(request, Options);
            FindSandboxProcesses(session);
            _registry.Register(session);
            if (session.CreatePath == CreatePath.Pooled)
                _registry.EndCreating(session.Record.ContainerId); // the member is the session's now
        }
        catch (SessionCreateException e)
        {
            // Rolled back, but remembered: GetSession answers create-failed (with the step) rather than "no session".
            _registry.AddEnded(new SessionTombstone(RecordOfFailedCreate(request, request.KernelId), SessionEndReason.CreateFailed(e.Step, DateTimeOffset.UtcNow), null, false));
            throw;
        }
        finally
        {
            _registry.EndCreating(request.KernelId);
        }
        // The task may have died between readiness and registration: the event was dropped then.
        if (await Containerd.Tasks.FindEndedAsync(session.Record.ContainerId, cancellationToken).ConfigureAwait(false) is { } ended &&
            session.TryTransition(SessionState.Exited, ended.Code))
        {
            session.SetEndReason(SessionEndReason.FromExitStatus(ended.Code, session.OutOfMemory, session.Record.MemoryBytes, DateTimeOffset.UtcNow));
        }
        _registry.Publish(new SessionEvent(session.KernelId, "started", session.State, null, DateTimeOffset.UtcNow));
        return session;
    }

    /// <summary>What a create that failed was asked for, as much of a record as a tombstone shows.</summary>
    private SessionRecord RecordOfFailedCreate(SessionRequest request, string kernelId) => new()
    {
        KernelId = kernelId,
        SessionId = request.SessionId ?? kernelId,
        ContainerId = kernelId,
        Image = request.Image,
        RuntimeClass = request.RuntimeClass ?? Options.DefaultRuntimeClass,
        Cpus = request.Cpus ?? Options.Resources.DefaultCpus,
        MemoryBytes = request.MemoryBytes ?? Options.Resources.DefaultMemoryBytes,
        ShmBytes = request.ShmBytes ?? 0,
        Request = request,
        CreatedAt = DateTimeOffset.UtcNow,
    };

    public IReadOnlyList<Session> Sessions => _registry.Sessions.OrderBy(s => s.Record.CreatedAt).ToList();

    /// <summary>A live session; one that ended within the retention throws <see cref="SessionEndedException"/> saying how.</summary>
    public Session GetSession(string kernelId) => _registry.Get(kernelId);

    /// <summary>The tombstone of a session that ended within the retention (null when it is live or unknown).</summary>
    public SessionTombstone? FindEndedSession(string kernelId) =>
        _registry.Contains(kernelId) ? null : _registry.FindEnded(kernelId);

    /// <summary>The tombstones of the sessions that ended within the retention, oldest end first.</summary>
    public IReadOnlyList<SessionTombstone> EndedSessions => _registry.Ended;

    /// <summary>
    /// Idempotent: destroying an unknown session cleans whatever containerd still has under that id. A session
    /// still running ends as destroyed (by <paramref name="by"/>); one that had already ended keeps its reason.
    /// </summary>
    public async Task DestroySessionAsync(string kernelId, bool keepScratch = false, DestroyedBy by = DestroyedBy.Api,
        CancellationToken cancellationToken = default)
    {
        if (_registry.TryGet(kernelId, out var session))
        {
            // Before the kill: the task's exit that follows is the destroy's, not an end of its own.
            var reason = session.SetEndReason(SessionEndReason.Destroyed(by, DateTimeOffset.UtcNow));
            session.TryTransition(SessionState.Destroying);
            // Runs waiting on the session end now, with its reason, rather than wait on a runner that is going away.
            session.SignalEnding();
            await session.DisposeAsync().ConfigureAwait(false);
            await Destroyer.DestroyAsync(session.Record, keepScratch, cancellationToken: cancellationToken).ConfigureAwait(false);
            _registry.Remove(kernelId);
            ForgetSandboxProcesses(session);
            session.TryTransition(SessionState.Destroyed);
            _registry.AddEnded(session.ToTombstone(reason));
            _registry.Publish(new SessionEvent(kernelId, "destroyed", SessionState.Destroyed, session.ExitCode, DateTimeOffset.UtcNow,
                session.EndReason?.Describe(), session.EndReason));
            return;
        }
        var container = await Containerd.Containers.FindAsync(kernelId, cancellationToken).ConfigureAwait(false);
        if (container is not null && SessionLabels.TryReadRecord(container.Labels, out var json))
            await Destroyer.DestroyAsync(SessionRecord.FromJson(json), keepScratch, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
    }

    public IAsyncEnumerable<ExecutionEvent> ExecuteAsync(string kernelId, string runId, ExecutionMode mode, string text,
        ExecutionOptions? options = null, CancellationToken cancellationToken = default)
    {
        var session = GetSession(kernelId);
        // Ended but not destroyed yet: say how, rather than wait on a runner that is gone.
        if (session.EndReason is { } ended)
            throw new SessionEndedException(session.ToTombstone(ended));
        RefuseIfPaused(session);
        CheckImageOffers(session.Record, mode);
        var (effective, sessionLimitGoverns) = WithSessionExecTimeout(session, mode, options);
        return TrackRunAsync(session, runId, token => LogRunAsync(session, runId, mode, session.Runner.ExecuteStreamingAsync(runId, mode, text, effective, token), token),
            sessionLimitGoverns, cancellationToken);
    }

    /// <summary>
    /// An image that declares its features (ai.backend.features) and leaves out "query" or "batch" does not offer
    /// that mode (Backend.AI's launcher does not either): refused here with a clear error rather than by the runner.
    /// </summary>
    private static void CheckImageOffers(SessionRecord record, ExecutionMode mode)
    {
        var feature = mode switch
        {
            ExecutionMode.Query => "query",
            ExecutionMode.Batch => "batch",
            _ => null,
        };
        if (feature is not null && record.Features is { } features && !features.Contains(feature, StringComparer.Ordinal))
        {
            throw new SessionRequestException($"session {record.KernelId}: its image '{record.Image}' does not offer {feature} mode " +
                $"(label {ImageLabels.Features}: '{string.Join(' ', features)}')");
        }
    }

    public Task InterruptAsync(string kernelId, CancellationToken cancellationToken = default)
    {
        var session = GetSession(kernelId);
        RefuseIfPaused(session);
        return session.Runner.InterruptAsync(cancellationToken);
    }

    public ScratchFiles Files(string kernelId) =>
        ScratchDirectory.Open(Options.ScratchRoot, TouchedSession(kernelId).Record.ContainerId, new ScratchFilesOptions
        {
            MaxListEntries = Options.ListMaxEntries,
            MaxTarEntries = Options.DownloadMaxEntries,
        }).Files;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
            return;
        await _stop.CancelAsync().ConfigureAwait(false);
        await _monitor.DisposeAsync().ConfigureAwait(false);
        _exitWatcher.Dispose();
        if (_eventPump is not null)
            await _eventPump.ConfigureAwait(false);
        if (_reconcileLoop is not null)
            await _reconcileLoop.ConfigureAwait(false);
        if (_timeoutLoop is not null)
            await _timeoutLoop.ConfigureAwait(false);
        await StopPoolsAsync().ConfigureAwait(false);
        foreach (var session in _registry.Sessions)
            await session.DisposeAsync().ConfigureAwait(false);
        // The FIFOs stay: the sessions run on, and the next agent carries their logs again.
        Services.LogRelays.Dispose();
        await StopStatsAsync().ConfigureAwait(false);
        Containerd.Dispose();
        if (_privateContainerd is not null)
            await _privateContainerd.DisposeAsync().ConfigureAwait(false);
        _stop.Dispose();
        _poolStop.Dispose();
        _dataDirLock.Dispose();
    }
}
