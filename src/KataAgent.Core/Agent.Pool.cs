using System.Diagnostics;
using System.Text.RegularExpressions;
using KataAgent.Core.Events;
using KataAgent.Core.Pool;
using KataAgent.Core.Resources;
using KataAgent.Core.Scratch;
using KataAgent.Core.Sessions;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core;

/// <summary>How a create was served: a claimed warm-pool member, or a container made for it.</summary>
public enum CreatePath
{
    Cold,
    Pooled,
}

// The warm pool (docs/POOL.md): running sandboxes per (image, runtime class, shape), claimed and personalised by creates
// that match. Members are made by the ordinary create (so they hold resources, ports, scratch like any session) under
// the kernel id "pool-<uuid>", which stays their container id; a claim gives the session its own kernel id on top.
// Until claimed, a member's id stays "creating" in the registry: reconciliation leaves it alone, nobody can see it.
public sealed partial class Agent
{
    private const string PoolMemberPrefix = "pool-";
    private readonly List<WarmPool> _pools = [];
    // Not disposed: wakes may still come from discards finishing after the stop, and only WaitAsync is used (no wait handle).
#pragma warning disable CA2213
    private readonly SemaphoreSlim _poolWake = new(0);
#pragma warning restore CA2213
    private Task? _poolLoop;
    // Stops the refiller apart from the agent's stop: a drain ends refilling while the agent serves on.
    private readonly CancellationTokenSource _poolStop = new();
    private int _coldCreatesInFlight;
    // Discards started from the event pump: a stopping agent waits for them (they reap network and scratch).
    private readonly List<Task> _backgroundDiscards = [];

    /// <summary>The configured pools, with their sizes and counters.</summary>
    public IReadOnlyList<PoolStatus> Pools => _pools.Select(p => p.Status()).ToList();

    private void StartPools()
    {
        foreach (var spec in Options.Pools)
        {
            spec.Validate();
            _pools.Add(new WarmPool(spec));
        }
        if (_pools.Count > 0)
            _poolLoop = Task.Run(() => RefillLoopAsync(_poolStop.Token), CancellationToken.None);
    }

    private void WakeRefiller()
    {
        if (_poolWake.CurrentCount == 0)
            _poolWake.Release();
    }

    private async Task RefillLoopAsync(CancellationToken cancellationToken)
    {
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                foreach (var pool in _pools.OrderByDescending(p => p.BelowMin))
                {
                    try
                    {
                        // A cold create that evicted members gets the room first.
                        while (pool.Wanted > 0 && Volatile.Read(ref _coldCreatesInFlight) == 0 && !cancellationToken.IsCancellationRequested)
                        {
                            if (!await FillOneAsync(pool, cancellationToken).ConfigureAwait(false))
                                break;
                        }
                    }
                    catch (Exception e) when (e is not OperationCanceledException)
                    {
                        // A refiller that died here would leave every pool empty for the agent's lifetime, silently.
                        _logger.LogError(e, "pool {Pool}: refill failed; retrying next round", pool.Spec.Key);
                    }
                }
                await _poolWake.WaitAsync(TimeSpan.FromSeconds(2), cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Makes one member; false when it could not (no room, a broken image): the next round tries again.</summary>
    private async Task<bool> FillOneAsync(WarmPool pool, CancellationToken cancellationToken)
    {
        var spec = pool.Spec;
        var id = PoolMemberPrefix + Guid.NewGuid().ToString("N");
        var room = RuntimeClasses.Known(spec.RuntimeClass).OverheadBytes + spec.MemoryBytes;
        if (Resources.Available.Cpus + 1e-9 < spec.Cpus || Resources.Available.MemoryBytes < room)
            return false; // pooled sandboxes never take room a real request could use: only what is free
        if (!_registry.TryBeginCreating(id))
            return false;
        pool.BeginFill();
        var took = Stopwatch.StartNew();
        Session? member = null;
        string? error = null;
        try
        {
            member = await Creator.CreateAsync(new SessionRequest
            {
                KernelId = id,
                Image = spec.Image,
                RuntimeClass = spec.RuntimeClass,
                Cpus = spec.Cpus,
                MemoryBytes = spec.MemoryBytes,
                Pool = spec.Key,
            }, null, cancellationToken).ConfigureAwait(false);
            FindSandboxProcesses(member);
            _logger.LogInformation("pool {Pool}: member {Id} ready in {Ms} ms", spec.Key, id, took.ElapsedMilliseconds);
            return true;
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // Whatever the cause (no such image yet, a refused request): the refiller lives on and tries next round.
            error = e.Message;
            _logger.LogWarning("pool {Pool}: cannot make a member: {Error}", spec.Key, e.Message);
            return false;
        }
        finally
        {
            pool.EndFill(member, took.Elapsed, error);
            if (member is null)
                _registry.EndCreating(id);
        }
    }

    /// <summary>A create: a claimed pool member when a pool serves the request, else a container made for it (cold).</summary>
    private async Task<Session> CreatePooledOrColdAsync(SessionRequest request, IProgress<string>? progress, CancellationToken cancellationToken)
    {
        if (MatchPool(request) is { } pool)
        {
            CheckPersonalisation(request);
#pragma warning disable CA2000 // a claimed member becomes the session or is discarded (disposed) by ClaimAsync
            while (pool.TryClaim(out var member))
            {
                if (await ClaimAsync(pool, member, request, cancellationToken).ConfigureAwait(false) is { } claimed)
                    return claimed;
            }
#pragma warning restore CA2000
            WakeRefiller();
        }
        Interlocked.Increment(ref _coldCreatesInFlight);
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                await EvictForAsync(request, cancellationToken).ConfigureAwait(false);
                try
                {
                    var session = await Creator.CreateAsync(request, progress, cancellationToken).ConfigureAwait(false);
                    session.CreatePath = CreatePath.Cold;
                    return session;
                }
                catch (Exception e) when ((e is InsufficientResourcesException || e.InnerException is InsufficientResourcesException) &&
                                          attempt < 5 && _pools.Any(p => p.Idle + p.Filling > 0))
                {
                    // A member that was being made when this create looked took the room: once made, it gives way too.
                    await WaitForFillsAsync(cancellationToken).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            Interlocked.Decrement(ref _coldCreatesInFlight);
            WakeRefiller();
        }
    }

    /// <summary>
    /// The pool for this request, or null: only what a member can take on at claim (ids, labels, environment, bootstrap
    /// script, timeouts) may differ from the pool's; mounts, other limits, service ports, a user, egress,
    /// capabilities or another runner need a container made for them.
    /// </summary>
    private WarmPool? MatchPool(SessionRequest request)
    {
        if (_pools.Count == 0 || request.Mounts.Count > 0 || request.ShmBytes is not null || request.ScratchBytes is not null ||
            request.ServicePorts.Count > 0 || request.Uid is not null || request.Gid is not null || request.Egress is not null ||
            request.AddCapabilities.Count > 0 || request.RunnerCommand.Count > 0 || request.Pool is not null)
        {
            return null;
        }
        var runtimeClass = request.RuntimeClass ?? Options.DefaultRuntimeClass;
        var cpus = request.Cpus ?? Options.Resources.DefaultCpus;
        var memory = request.MemoryBytes ?? Options.Resources.DefaultMemoryBytes;
        return _pools.FirstOrDefault(p => p.Spec.Image == request.Image && p.Spec.RuntimeClass == runtimeClass &&
                                           Math.Abs(p.Spec.Cpus - cpus) < 1e-9 && p.Spec.MemoryBytes == memory);
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    private static partial Regex PooledIdPattern();

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex PooledEnvNamePattern();

    /// <summary>What a cold create's validate step would refuse, refused before a member is taken.</summary>
    private static void CheckPersonalisation(SessionRequest request)
    {
        var problems = new List<string>();
        if (!PooledIdPattern().IsMatch(request.KernelId!) || !ScratchDirectory.IsValidSessionId(request.KernelId))
            problems.Add($"kernel id '{request.KernelId}' must be 1-64 characters of letters, digits, '_', '.', '-'");
        if (request.KernelId!.StartsWith(PoolMemberPrefix, StringComparison.Ordinal))
            problems.Add($"kernel id '{request.KernelId}' uses the pool members' prefix '{PoolMemberPrefix}'");
        if (request.SessionId is { } sid && !PooledIdPattern().IsMatch(sid))
            problems.Add($"session id '{sid}' must be 1-64 characters of letters, digits, '_', '.', '-'");
        foreach (var (name, value) in request.Environment)
        {
            if (!PooledEnvNamePattern().IsMatch(name) || value.Contains('\0', StringComparison.Ordinal))
                problems.Add($"environment variable '{name}' is not a valid name (or its value holds NUL)");
        }
        if (problems.Count > 0)
            throw new SessionRequestException(string.Join("; ", problems));

        // As SessionLabels.For refuses them, before a member is taken.
        foreach (var key in request.Labels.Keys)
        {
            if (key.StartsWith("ai.backend.", StringComparison.Ordinal) || key.StartsWith("io.kata-agent.", StringComparison.Ordinal))
                throw new SessionRequestException($"label '{key}' uses a reserved prefix (ai.backend., io.kata-agent.)");
        }
    }

    /// <summary>
    /// Personalises a claimed member for this request; null when the member is unusable (dead, or its runner refused),
    /// which is then destroyed: the caller takes the next one or goes cold.
    /// </summary>
    private async Task<Session?> ClaimAsync(WarmPool pool, Session member, SessionRequest request, CancellationToken cancellationToken)
    {
        var containerId = member.Record.ContainerId;
        var kernelId = request.KernelId!;
        var took = Stopwatch.StartNew();
        SessionRecord? saved = null;
        try
        {
            if (await Containerd.Tasks.FindEndedAsync(containerId, cancellationToken).ConfigureAwait(false) is not null)
                throw new InvalidOperationException($"member {containerId} is no longer running");
            var scratch = ScratchDirectory.Open(Options.ScratchRoot, containerId);
            if (request.BootstrapScript is { } bootstrap)
            {
                await scratch.WriteWorkFileAsync(ScratchDirectory.BootstrapFile, bootstrap, ScratchDirectory.BootstrapFileMode, (0u, 0u), cancellationToken)
                    .ConfigureAwait(false);
            }
            // Before the first run: the runner starts nothing for the tenant until this (interpreter, bootstrap).
            await member.Runner.PersonaliseAsync(request.Environment, Options.RunnerReadyTimeout, cancellationToken).ConfigureAwait(false);
            var record = member.Record with
            {
                KernelId = kernelId,
                SessionId = request.SessionId ?? kernelId,
                CreatedAt = DateTimeOffset.UtcNow,
                Request = request with { RuntimeClass = member.Record.RuntimeClass, Pool = null },
            };
            // The new record first: a crash from here on leaves a session (recovery keeps the claimed record).
            await Services.Store.SaveAsync(record, cancellationToken).ConfigureAwait(false);
            saved = record;
            var container = await Containerd.Containers.GetAsync(containerId, cancellationToken).ConfigureAwait(false);
            container.Labels.Clear();
            foreach (var (key, value) in SessionLabels.For(record, Options.AgentId, request.Labels))
                container.Labels[key] = value;
            container.Labels[SessionLabels.ClaimedFromPool] = pool.Spec.Key;
            await Containerd.Containers.UpdateAsync(container, ["labels"], cancellationToken).ConfigureAwait(false);
            Services.Store.Delete(containerId);
            var session = new Session(record, member.Runner)
            {
                CreatePath = CreatePath.Pooled,
                SandboxProcesses = member.SandboxProcesses,
            };
            pool.CountClaim();
            _logger.LogInformation("session {KernelId}: claimed pool member {Member} of {Pool} in {Ms} ms", kernelId, containerId, pool.Spec.Key,
                took.ElapsedMilliseconds);
            WakeRefiller();
            return session;
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            pool.CountDiscarded(e.Message);
            _logger.LogWarning("pool {Pool}: member {Member} unusable, destroyed: {Error}", pool.Spec.Key, containerId, e.Message);
            if (saved is not null)
                Services.Store.Delete(saved.KernelId);
            await DiscardMemberAsync(member, CancellationToken.None).ConfigureAwait(false);
            return null;
        }
        catch (OperationCanceledException)
        {
            // Half personalised, perhaps: never handed to anyone else.
            if (saved is not null)
                Services.Store.Delete(saved.KernelId);
            await DiscardMemberAsync(member, CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Destroys a member no one will get (dead, refused, evicted, agent stopping) and frees its id.</summary>
    private async Task DiscardMemberAsync(Session member, CancellationToken cancellationToken)
    {
        try
        {
            await member.DisposeAsync().ConfigureAwait(false);
            await Destroyer.DestroyAsync(member.Record, keepScratch: false, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _logger.LogWarning(e, "pool member {Member}: destroy left work undone (reconciliation retries)", member.Record.ContainerId);
        }
        finally
        {
            _registry.EndCreating(member.Record.ContainerId);
            WakeRefiller();
        }
    }

    private async Task WaitForFillsAsync(CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(Options.RunnerReadyTimeout);
        try
        {
            while (_pools.Any(p => p.Filling > 0))
                await Task.Delay(TimeSpan.FromMilliseconds(100), deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>Idle members give up their room when a cold create needs it: newest first, only as many as it takes.</summary>
    private async Task EvictForAsync(SessionRequest request, CancellationToken cancellationToken)
    {
        var runtimeClass = request.RuntimeClass ?? Options.DefaultRuntimeClass;
        var cpus = request.Cpus ?? Options.Resources.DefaultCpus;
        var memory = (request.MemoryBytes ?? Options.Resources.DefaultMemoryBytes) +
                     OverheadOf(runtimeClass);
        while (Resources.Available.Cpus + 1e-9 < cpus || Resources.Available.MemoryBytes < memory)
        {
            var victim = _pools.OrderByDescending(p => p.Idle).FirstOrDefault(p => p.Idle > 0);
#pragma warning disable CA2000 // DiscardMemberAsync disposes it
            if (victim is null || !victim.TryEvict(out var member))
                return; // nothing left to give: the create refuses with what is short
#pragma warning restore CA2000
            _logger.LogInformation("pool {Pool}: evicting member {Member} to make room for {KernelId}", victim.Spec.Key, member.Record.ContainerId, request.KernelId);
            await DiscardMemberAsync(member, cancellationToken).ConfigureAwait(false);
        }
    }

    private long OverheadOf(string runtimeClass)
    {
        try
        {
            return RuntimeClasses.Known(runtimeClass).OverheadBytes;
        }
        catch (ArgumentException)
        {
            return 0; // an unknown class: the create refuses it with the reason
        }
    }

    /// <summary>The registered session whose container this is (a claimed member's container id is not its kernel id).</summary>
    private bool TryGetByContainer(string containerId, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Session? session)
    {
        if (_registry.TryGet(containerId, out session))
            return true;
        session = _registry.Sessions.FirstOrDefault(s => s.Record.ContainerId == containerId);
        return session is not null;
    }

    /// <summary>A task event for no session: an idle member that died is taken out (never handed out) and replaced.</summary>
    private void NotePoolMemberEvent(TaskEvent e)
    {
        if (e is not TaskExited || !e.ContainerId.StartsWith(PoolMemberPrefix, StringComparison.Ordinal))
            return;
        foreach (var pool in _pools)
        {
            if (pool.TryRemove(e.ContainerId) is { } dead)
            {
                _logger.LogWarning("pool {Pool}: member {Member} died while idle; replacing it", pool.Spec.Key, e.ContainerId);
                lock (_backgroundDiscards)
                {
                    _backgroundDiscards.RemoveAll(t => t.IsCompleted);
                    _backgroundDiscards.Add(Task.Run(() => DiscardMemberAsync(dead, CancellationToken.None), CancellationToken.None));
                }
                return;
            }
        }
    }

    /// <summary>Tests: stop as a killed agent would, leaving the idle members for the next agent's recovery to reap.</summary>
    internal bool LeavePoolOnStop { get; set; }

    /// <summary>
    /// Ends refilling and destroys every idle member (a fill under way finishes and goes too); claimed sessions stay.
    /// Later creates that match a pool go cold. For maintenance, and for a teardown that must not race the refiller.
    /// </summary>
    public Task DrainPoolsAsync() => StopPoolsAsync();

    /// <summary>Agent stop: the refiller ends and the idle members go (a killed agent's are reaped at recovery).</summary>
    private async Task StopPoolsAsync()
    {
        await _poolStop.CancelAsync().ConfigureAwait(false);
        if (_poolLoop is not null)
            await _poolLoop.ConfigureAwait(false);
        Task[] discards;
        lock (_backgroundDiscards)
            discards = [.. _backgroundDiscards];
        await Task.WhenAll(discards).ConfigureAwait(false);
        if (LeavePoolOnStop)
        {
            foreach (var member in _pools.SelectMany(p => p.TakeAll()))
                await member.DisposeAsync().ConfigureAwait(false);
            return;
        }
        var members = _pools.SelectMany(p => p.TakeAll()).ToList();
        await Task.WhenAll(members.Select(m => DiscardMemberAsync(m, CancellationToken.None))).ConfigureAwait(false);
    }
}
