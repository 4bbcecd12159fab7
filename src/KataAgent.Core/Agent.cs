using System.Collections.Concurrent;
using System.Threading.Channels;
using KataAgent.Containerd;
using KataAgent.Containerd.Private;
using KataAgent.Core.Cgroups;
using KataAgent.Core.Events;
using KataAgent.Core.HostDirectories;
using KataAgent.Core.Locking;
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
/// </summary>
public sealed partial class Agent : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, Session> _sessions = new(StringComparer.Ordinal);
    // Containers of sessions still being created: reconciliation must not mistake them for strays.
    private readonly ConcurrentDictionary<string, byte> _creating = new(StringComparer.Ordinal);
    private readonly List<Channel<SessionEvent>> _subscribers = [];
    private readonly CancellationTokenSource _stop = new();
    private PrivateContainerd? _privateContainerd;
    private readonly DataDirLock _dataDirLock;
    private readonly TaskEventMonitor _monitor;
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
        Creator = new SessionCreator(services);
        Destroyer = new SessionDestroyer(services);
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
        _monitor.Resubscribed += () => ReconcileAfterGapAsync(_stop.Token);
        await RecoverAsync(cancellationToken).ConfigureAwait(false);
        if (Options.ReconcileInterval > TimeSpan.Zero)
            _reconcileLoop = Task.Run(() => ReconcileLoopAsync(Options.ReconcileInterval, _stop.Token), CancellationToken.None);
    }

    /// <summary>Rebuilds sessions from their records (and container labels) after a restart.</summary>
    private async Task RecoverAsync(CancellationToken cancellationToken)
    {
        var records = (await Services.Store.LoadAllAsync(cancellationToken).ConfigureAwait(false)).ToDictionary(r => r.KernelId, StringComparer.Ordinal);
        foreach (var container in await Containerd.Containers.ListAsync(cancellationToken).ConfigureAwait(false))
        {
            if (SessionLabels.TryReadRecord(container.Labels, out var json) && !records.ContainsKey(container.Id))
            {
                try
                {
                    records[container.Id] = WithRunnerKeysFromScratch(SessionRecord.FromJson(json));
                }
                catch (System.Text.Json.JsonException e)
                {
                    _logger.LogWarning("container {Id} carries an unreadable session record: {Message}", container.Id, e.Message);
                }
            }
        }
        foreach (var record in records.Values)
        {
            var task = await Containerd.Tasks.FindAsync(record.ContainerId, cancellationToken).ConfigureAwait(false);
            if (task is null || task.Status == global::Containerd.V1.Types.Status.Stopped)
            {
                _logger.LogInformation("session {KernelId} did not survive; cleaning up", record.KernelId);
                await Destroyer.DestroyAsync(record, keepScratch: false, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
                continue;
            }
            Services.Ports.MarkInUse(record.Ports.Select(p => p.HostPort));
            Services.Resources.Restore(new ResourceAllocation(record.KernelId, new ResourceSlots(record.Cpus, record.MemoryBytes),
                RuntimeClasses.Known(record.RuntimeClass).OverheadBytes)
            {
                CpuSet = record.CpuSet,
            });
            await Services.Store.SaveAsync(record, cancellationToken).ConfigureAwait(false);
            Register(new Session(record, NewRunnerClient(record)));
            Services.LogRelays.Start(record.KernelId, record.LogPath);
            _logger.LogInformation("recovered session {KernelId}", record.KernelId);
        }
        await ReconcileAsync(cancellationToken).ConfigureAwait(false);
        await CleanOrphansAsync(cancellationToken).ConfigureAwait(false);
    }

    private KernelRunnerClient NewRunnerClient(SessionRecord record) => new(new KernelRunnerClientOptions
    {
        InputPort = record.ReplInPort,
        OutputPort = record.ReplOutPort,
        Curve = record.RunnerCurve,
        MaxMessageSize = Options.RunnerMessageMaxBytes,
    });

    /// <summary>
    /// Makes a session known, and turns what goes wrong on its runner channel (a run cut short by a lost
    /// connection or an oversized message, a failure on the client's thread) into a log line and an event.
    /// </summary>
    private void Register(Session session)
    {
        var kernelId = session.KernelId;
        session.Runner.Faulted += reason =>
        {
            _logger.LogWarning("session {KernelId}: {Reason}", kernelId, reason);
            Publish(new SessionEvent(kernelId, "run-error", session.State, null, DateTimeOffset.UtcNow, reason));
        };
        _sessions[kernelId] = session;
    }

    /// <summary>
    /// A record taken from a container label carries no keys (the agent stopped before it stored the
    /// record file): read the runner's key back from the session's config dir.
    /// </summary>
    private SessionRecord WithRunnerKeysFromScratch(SessionRecord record)
    {
        var keyFile = Path.Combine(ScratchDirectory.Open(Options.ScratchRoot, record.KernelId).ConfigPath, ScratchDirectory.RunnerCurveKeyFile);
        if (record.RunnerCurve is not null || !File.Exists(keyFile))
            return record;
        return record with { RunnerCurve = RunnerCurveKeys.FromRunnerFile(File.ReadAllText(keyFile)) };
    }

    private async Task PumpEventsAsync(CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var e in _monitor.Events.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                if (!_sessions.TryGetValue(e.ContainerId, out var session))
                    continue;
                switch (e)
                {
                    case TaskExited exited when session.TryTransition(SessionState.Exited, exited.ExitCode):
                        Publish(new SessionEvent(session.KernelId, "exited", SessionState.Exited, exited.ExitCode, exited.At,
                            session.OutOfMemory ? "out of memory" : null));
                        break;
                    case TaskOutOfMemory oom:
                        session.MarkOutOfMemory();
                        Publish(new SessionEvent(session.KernelId, "oom", session.State, null, oom.At));
                        break;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void Publish(SessionEvent e)
    {
        lock (_subscribers)
        {
            foreach (var subscriber in _subscribers)
                subscriber.Writer.TryWrite(e);
        }
    }

    /// <summary>Lifecycle events from now on, until the token is cancelled.</summary>
    public async IAsyncEnumerable<SessionEvent> SubscribeAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        // Bounded: a subscriber that stops reading loses its oldest events, not the agent's memory.
        var channel = Channel.CreateBounded<SessionEvent>(new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.DropOldest });
        lock (_subscribers)
            _subscribers.Add(channel);
        try
        {
            await foreach (var e in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
                yield return e;
        }
        finally
        {
            lock (_subscribers)
                _subscribers.Remove(channel);
        }
    }

    public async Task<Session> CreateSessionAsync(SessionRequest request, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        request = request with { KernelId = request.KernelId ?? Guid.NewGuid().ToString("N") };
        if (_sessions.ContainsKey(request.KernelId) || !_creating.TryAdd(request.KernelId, 0))
            throw new SessionRequestException($"a session with kernel id '{request.KernelId}' already exists");
        Session session;
        try
        {
            session = await Creator.CreateAsync(request, progress, cancellationToken).ConfigureAwait(false);
            Register(session);
        }
        finally
        {
            _creating.TryRemove(request.KernelId, out _);
        }
        // The task may have died between readiness and registration: the event was dropped then.
        var task = await Containerd.Tasks.FindAsync(session.Record.ContainerId, cancellationToken).ConfigureAwait(false);
        if (task is null || task.Status == global::Containerd.V1.Types.Status.Stopped)
            session.TryTransition(SessionState.Exited, (int?)task?.ExitStatus);
        Publish(new SessionEvent(session.KernelId, "started", session.State, null, DateTimeOffset.UtcNow));
        return session;
    }

    public IReadOnlyList<Session> Sessions => _sessions.Values.OrderBy(s => s.Record.CreatedAt).ToList();

    public Session GetSession(string kernelId) =>
        _sessions.TryGetValue(kernelId, out var session) ? session : throw new SessionNotFoundException(kernelId);

    /// <summary>Idempotent: destroying an unknown session cleans whatever containerd still has under that id.</summary>
    public async Task DestroySessionAsync(string kernelId, bool keepScratch = false, CancellationToken cancellationToken = default)
    {
        if (_sessions.TryGetValue(kernelId, out var session))
        {
            session.TryTransition(SessionState.Destroying);
            await session.DisposeAsync().ConfigureAwait(false);
            await Destroyer.DestroyAsync(session.Record, keepScratch, cancellationToken: cancellationToken).ConfigureAwait(false);
            _sessions.TryRemove(kernelId, out _);
            session.TryTransition(SessionState.Destroyed);
            Publish(new SessionEvent(kernelId, "destroyed", SessionState.Destroyed, session.ExitCode, DateTimeOffset.UtcNow));
            return;
        }
        var container = await Containerd.Containers.FindAsync(kernelId, cancellationToken).ConfigureAwait(false);
        if (container is not null && SessionLabels.TryReadRecord(container.Labels, out var json))
            await Destroyer.DestroyAsync(SessionRecord.FromJson(json), keepScratch, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
    }

    public IAsyncEnumerable<ExecutionEvent> ExecuteAsync(string kernelId, string runId, ExecutionMode mode, string text,
        ExecutionOptions? options = null, CancellationToken cancellationToken = default) =>
        GetSession(kernelId).Runner.ExecuteStreamingAsync(runId, mode, text, options, cancellationToken);

    public Task InterruptAsync(string kernelId, CancellationToken cancellationToken = default) =>
        GetSession(kernelId).Runner.InterruptAsync(cancellationToken);

    public ScratchFiles Files(string kernelId) =>
        ScratchDirectory.Open(Options.ScratchRoot, GetSession(kernelId).KernelId, new ScratchFilesOptions
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
        if (_eventPump is not null)
            await _eventPump.ConfigureAwait(false);
        if (_reconcileLoop is not null)
            await _reconcileLoop.ConfigureAwait(false);
        foreach (var session in _sessions.Values)
            await session.DisposeAsync().ConfigureAwait(false);
        // The FIFOs stay: the sessions run on, and the next agent carries their logs again.
        Services.LogRelays.Dispose();
        await StopStatsAsync().ConfigureAwait(false);
        Containerd.Dispose();
        if (_privateContainerd is not null)
            await _privateContainerd.DisposeAsync().ConfigureAwait(false);
        _stop.Dispose();
        _dataDirLock.Dispose();
    }
}
