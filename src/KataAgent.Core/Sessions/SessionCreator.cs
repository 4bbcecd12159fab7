using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using KataAgent.Containerd.Services;
using KataAgent.Core.Containers;
using KataAgent.Core.Mounts;
using KataAgent.Core.Resources;
using KataAgent.Core.Runtime;
using KataAgent.Core.Scratch;
using KataAgent.Core.ScratchQuota;
using KataAgent.Network;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Sessions;

/// <summary>
/// Creates a session as a table of named steps (<see cref="CreateSteps"/>), each taking what the step before it
/// produced and registering its undo. A failure at any step undoes every earlier one, so nothing is left behind.
/// What each step hands on is in SessionCreator.Stages.cs.
/// </summary>
public sealed partial class SessionCreator(SessionServices services)
{
    public const string RunnerMountPath = "/opt/kata-agent";
    public const string RunnerBinary = RunnerMountPath + "/kata-runner";
    public const int ReplInPort = 2000;
    public const int ReplOutPort = 2001;

    private static readonly string[] ReservedContainerPaths = [ScratchDirectory.GuestWorkPath, ScratchDirectory.GuestConfigPath, RunnerMountPath];

    /// <summary>Test hook: fails right before the named step, to prove rollback.</summary>
    internal string? FailBeforeStep { get; set; }

    /// <summary>Test hook: observes the state after each create step that completed.</summary>
    public Func<string, CancellationToken, Task>? AfterStep { get; set; }

    /// <summary>The container and its runner: the tail of a create, and all of a restart.</summary>
    private static readonly StepPipeline<SessionCreator, SessionParts, Session> LaunchSteps = StepPipeline.Start<SessionCreator, SessionParts>()
        .Then("container", static (s, parts, undo, ct) => s.StartContainerAsync(parts, undo, ct))
        .Then("wait-runner", static (s, record, undo, ct) => s.WaitForRunnerAsync(record, undo, ct));

    private static readonly StepPipeline<SessionCreator, Requested, Session> CreateSteps = StepPipeline.Start<SessionCreator, Requested>()
        .Then("validate", static (s, requested, undo, _) => s.ValidateAsync(requested, undo))
        .Then("resolve-image", static (s, validated, _, ct) => s.ResolveImageAsync(validated, ct))
        .Then("mounts", static (s, resolved, undo, _) => s.StageMountsAsync(resolved, undo))
        .Then("allocate-resources", static (s, staged, undo, _) => s.AllocateResourcesAsync(staged, undo))
        .Then("allocate-ports", static (s, allocated, undo, _) => s.AllocatePortsAsync(allocated, undo))
        .Then("scratch", static (s, ports, undo, ct) => s.PrepareScratchAsync(ports, undo, ct))
        .Then("scratch-disk", static (s, scratch, undo, ct) => s.MountScratchDiskAsync(scratch, undo, ct))
        .Then("network", static (s, scratch, undo, ct) => s.AttachNetworkAsync(scratch, undo, ct))
        .Then(LaunchSteps)
        .Then("register", static (s, session, undo, ct) => s.RegisterAsync(session, undo, ct));

    /// <summary>The create steps in the order they run (the progress stream reports these names).</summary>
    public static IReadOnlyList<string> StepNames => CreateSteps.StepNames;

    /// <summary>
    /// Runs the create steps. <paramref name="progress"/> is told each step's name as it starts; when it also implements
    /// <see cref="IProgress{T}"/> of <see cref="CreateStepTiming"/> it is told each step's duration as it ends. The
    /// session keeps the durations (<see cref="Session.CreateSteps"/>).
    /// </summary>
    public async Task<Session> CreateAsync(SessionRequest request, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var kernelId = request.KernelId ?? Guid.NewGuid().ToString("N");
        var timings = new List<CreateStepTiming>();
        var timingProgress = progress as IProgress<CreateStepTiming>;
        var session = await CreateSteps.RunAsync(this, new Requested(request, kernelId), new StepRunOptions
        {
            Wrap = (step, e) => new SessionCreateException(kernelId, step, e),
            // Bad input is the caller's to fix: surface it as such, not as a failed step.
            IsCallersFault = e => e is SessionRequestException or InsufficientResourcesException,
            Progress = progress,
            StepCompleted = (step, elapsed) =>
            {
                var timing = new CreateStepTiming(step, elapsed);
                timings.Add(timing);
                timingProgress?.Report(timing);
            },
            FailBeforeStep = FailBeforeStep,
            AfterStep = AfterStep,
        }, services.Logger, cancellationToken).ConfigureAwait(false);
        session.CreateSteps = timings;
        return session;
    }

    /// <summary>
    /// Replaces a session's container with a fresh one from the same image, keeping its scratch
    /// dir, network and ports: the "container" and "wait-runner" steps again.
    /// </summary>
    public async Task<Session> RestartAsync(SessionRecord record, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(record);
        var request = record.Request ?? throw new InvalidOperationException($"session {record.KernelId} has no stored request and cannot be restarted");
        await TaskReaper.ReapContainerAsync(services.Containerd, record.ContainerId, SessionDestroyer.ParseSignal(record.StopSignal),
            services.Options.StopGracePeriod, services.Logger, cancellationToken).ConfigureAwait(false);
        var parts = new SessionParts(
            Request: request,
            KernelId: record.KernelId,
            Runtime: services.RuntimeClasses.Resolve(record.RuntimeClass),
            Image: await services.Images.FindAsync(record.Image, cancellationToken: cancellationToken).ConfigureAwait(false)
                ?? throw new SessionRequestException($"image '{record.Image}' of session {record.KernelId} is gone: cannot restart"),
            Allocation: new ResourceAllocation(record.KernelId, new ResourceSlots(record.Cpus, record.MemoryBytes), 0),
            Ports: record.Ports,
            Scratch: ScratchDirectory.Open(services.Options.ScratchRoot, record.KernelId),
            LogPath: record.LogPath,
            // The key file stays in the config dir: the new runner reads the same keys.
            RunnerCurve: record.RunnerCurve,
            Steering: new Steering(record.RunnerCommand, record.Features, record.ServicePorts),
            Network: await services.Network.GetAsync(record.KernelId, cancellationToken).ConfigureAwait(false)
                ?? throw new InvalidOperationException($"session {record.KernelId} has lost its network: destroy and recreate it"),
            StagedMounts: services.MountStaging.Existing(record.KernelId, request.Mounts.Count));
        var session = await LaunchSteps.RunAsync(this, parts, new StepRunOptions
        {
            Wrap = (step, e) => new SessionCreateException(record.KernelId, step, e),
        }, services.Logger, cancellationToken).ConfigureAwait(false);
        var restarted = session.Record with { CreatedAt = record.CreatedAt };
        await services.Store.SaveAsync(restarted, cancellationToken).ConfigureAwait(false);
        return new Session(restarted, session.Runner);
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    private static partial Regex IdPattern();

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex EnvNamePattern();

    /// <summary>
    /// Everything about the request that can be wrong is found here, before anything is taken or attached: the fields,
    /// the runtime class, and the mount sources, which are opened now (<see cref="PinnedMountSources"/>) and held until
    /// step mounts stages those very inodes.
    /// </summary>
    private Task<Validated> ValidateAsync(Requested requested, UndoStack undo)
    {
        var (request, kernelId) = requested;
        var problems = new List<string>();
        if (string.IsNullOrWhiteSpace(request.Image))
            problems.Add("image is empty");
        if (!IdPattern().IsMatch(kernelId) || !ScratchDirectory.IsValidSessionId(kernelId))
            problems.Add($"kernel id '{kernelId}' must be 1-64 characters of letters, digits, '_', '.', '-'");
        if (request.SessionId is { } sid && !IdPattern().IsMatch(sid))
            problems.Add($"session id '{sid}' must be 1-64 characters of letters, digits, '_', '.', '-'");
        if (request.Cpus is { } cpus && (cpus <= 0 || double.IsNaN(cpus) || cpus > 1024))
            problems.Add($"cpu {cpus} must be > 0");
        if (request.MemoryBytes is { } mem && mem < (16L << 20))
            problems.Add($"memory {mem} bytes is below the 16 MiB minimum");
        if (request.ShmBytes is { } shm && shm <= 0)
            problems.Add($"shared memory {shm} must be > 0");
        if (request.ScratchBytes is { } scratchBytes && scratchBytes < ScratchDisks.MinimumBytes)
            problems.Add($"scratch size {scratchBytes} bytes is below the {ScratchDisks.MinimumBytes >> 20} MiB minimum");
        foreach (var key in request.Environment.Keys.Where(k => !EnvNamePattern().IsMatch(k)))
            problems.Add($"environment variable name '{key}' is invalid");
        foreach (var (key, value) in request.Environment.Where(kv => kv.Value.Contains('\n', StringComparison.Ordinal) || kv.Value.Contains('\0', StringComparison.Ordinal)))
            problems.Add($"environment variable '{key}' contains a newline or NUL");
        if (request.RunnerCommand.Count > 0 && ImageLabels.CheckCommand(request.RunnerCommand) is { } commandProblem)
            problems.Add(commandProblem);
        if (request.Uid is < 0 || request.Gid is < 0)
            problems.Add("uid/gid must be >= 0");
        var allowedCaps = services.Options.AllowedCapabilities;
        foreach (var cap in request.AddCapabilities.Where(c => !allowedCaps.Contains(c, StringComparer.Ordinal)))
            problems.Add($"capability '{cap}' is not allowed (this agent allows: {(allowedCaps.Count == 0 ? "none" : string.Join(", ", allowedCaps))})");
        foreach (var mount in request.Mounts)
            problems.AddRange(CheckMount(mount));
        var destinations = request.Mounts.GroupBy(m => m.ContainerPath.TrimEnd('/'), StringComparer.Ordinal).Where(g => g.Count() > 1);
        problems.AddRange(destinations.Select(g => $"mount destination '{g.Key}' is used twice"));
        if (problems.Count > 0)
            throw new SessionRequestException("invalid session request: " + string.Join("; ", problems));
        RuntimeClassStatus runtime;
        try
        {
            runtime = services.RuntimeClasses.Resolve(request.RuntimeClass);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            throw new SessionRequestException(e.Message);
        }
        // Last: a refusal above holds nothing open.
        PinnedMountSources mountSources;
        try
        {
            mountSources = PinnedMountSources.Open(request.Mounts.Select(m => new MountSource(m.HostPath, m.ReadOnly)).ToList(),
                services.Options.AllowedMountRoots);
        }
        catch (MountSourceException e)
        {
            throw new SessionRequestException(e.Message);
        }
        // Step mounts closes them once staged; this closes them if a step before it fails.
        undo.Push("mount-sources", _ =>
        {
            mountSources.Dispose();
            return Task.CompletedTask;
        });
        return Task.FromResult(new Validated(requested, runtime, mountSources));
    }

    private IEnumerable<string> CheckMount(MountRequest mount)
    {
        if (!Path.IsPathRooted(mount.HostPath))
            yield return $"mount source '{mount.HostPath}' is not an absolute path";
        if (!mount.ContainerPath.StartsWith('/') || mount.ContainerPath.Split('/').Contains(".."))
            yield return $"mount destination '{mount.ContainerPath}' must be an absolute path without '..'";
        else if (IsReserved(mount.ContainerPath))
            yield return $"mount destination '{mount.ContainerPath}' is reserved for the agent";
        else if (mount.ContainerPath.TrimEnd('/').Length == 0)
            yield return "mount destination '/' is not allowed";
    }

    /// <summary>
    /// The agent's own mount points. Below the work dir is allowed: Backend.AI mounts vfolders at /home/work/&lt;name&gt;,
    /// and the runtime makes that mount point inside the container's own view of the work dir.
    /// </summary>
    private static bool IsReserved(string containerPath) => ReservedContainerPaths.Any(r =>
        containerPath.TrimEnd('/') == r || (r != ScratchDirectory.GuestWorkPath && containerPath.StartsWith(r + "/", StringComparison.Ordinal)));

    private async Task<ImageResolved> ResolveImageAsync(Validated validated, CancellationToken ct)
    {
        var request = validated.Request;
        var image = await services.Images.FindAsync(request.Image, cancellationToken: ct).ConfigureAwait(false)
            ?? throw new SessionRequestException($"image '{request.Image}' is not present on this agent: import or pull it first");
        IReadOnlyList<ServicePortDefinition> servicePorts;
        try
        {
            servicePorts = ServicePortLabel.Parse(image.Labels.GetValueOrDefault(ServicePortLabel.LabelName));
        }
        catch (FormatException e)
        {
            throw new SessionRequestException($"image '{image.Name}' has a bad label: {e.Message}");
        }
        if (request.ServicePorts.Count > 0)
        {
            var requested = string.Join(",", request.ServicePorts.Select(s => $"{s.Name}:{s.Protocol}:[{string.Join(",", s.ContainerPorts)}]"));
            try
            {
                // The same rules as the label, and no clash with what the image declares.
                ServicePortLabel.Parse(string.Join(",", new[] { image.Labels.GetValueOrDefault(ServicePortLabel.LabelName), requested }.Where(x => !string.IsNullOrEmpty(x))));
            }
            catch (FormatException e)
            {
                throw new SessionRequestException("bad service ports: " + e.Message.Replace(ServicePortLabel.LabelName + ": ", "", StringComparison.Ordinal));
            }
            servicePorts = [.. servicePorts, .. request.ServicePorts];
        }
        CheckServicePortCount(servicePorts);
        ResourceMinimums minimums;
        IReadOnlyList<string>? labelCommand;
        try
        {
            minimums = ImageLabels.ParseMinimums(image.Labels);
            labelCommand = ImageLabels.ParseRunnerCommand(image.Labels);
        }
        catch (FormatException e)
        {
            throw new SessionRequestException($"image '{image.Name}' has a bad label: {e.Message}");
        }
        CheckMinimums(image, minimums, request);
        var runnerCommand = request.RunnerCommand.Count > 0 ? request.RunnerCommand : labelCommand;
        var steering = new Steering(runnerCommand, ImageLabels.ParseFeatures(image.Labels), ServiceApps.FromDefinitions(servicePorts));
        return new ImageResolved(validated, image, servicePorts, steering);
    }

    /// <summary>
    /// Before anything is allocated: the CPU share and memory the session will get (asked for, or the agent's
    /// defaults) must reach the image's ai.backend.resource.min.cpu / .mem, as Backend.AI's manager requires.
    /// </summary>
    private void CheckMinimums(KataAgent.Images.ImageDetails image, ResourceMinimums minimums, SessionRequest request)
    {
        var defaults = services.Options.Resources;
        var problems = new List<string>();
        var cpus = request.Cpus ?? defaults.DefaultCpus;
        if (minimums.Cpus is { } minCpus && cpus < minCpus)
        {
            problems.Add($"label {ImageLabels.MinCpu}={image.Labels[ImageLabels.MinCpu]} needs at least {minCpus.ToString(CultureInfo.InvariantCulture)} CPUs, " +
                $"the session {(request.Cpus is null ? "would get the default" : "asks for")} {cpus.ToString(CultureInfo.InvariantCulture)}");
        }
        var memory = request.MemoryBytes ?? defaults.DefaultMemoryBytes;
        if (minimums.MemoryBytes is { } minMemory && memory < minMemory)
        {
            problems.Add($"label {ImageLabels.MinMemory}={image.Labels[ImageLabels.MinMemory]} needs at least {minMemory} bytes ({minMemory >> 20} MiB) of memory, " +
                $"the session {(request.MemoryBytes is null ? "would get the default" : "asks for")} {memory} bytes ({memory >> 20} MiB)");
        }
        if (problems.Count > 0)
            throw new SessionRequestException($"image '{image.Name}' needs more than the session gets: {string.Join("; ", problems)}");
    }

    // Before any port is taken: one session must not be able to drain the host's port pool.
    private void CheckServicePortCount(IReadOnlyList<ServicePortDefinition> servicePorts)
    {
        var count = servicePorts.Sum(s => s.ContainerPorts.Count);
        var limit = services.Options.MaxServicePortsPerSession;
        if (count > limit)
        {
            throw new SessionRequestException($"the session would publish {count} service ports (image label {ServicePortLabel.LabelName} " +
                $"plus the request); at most {limit} are allowed per session (config limits.ports_per_session)");
        }
    }

    private Task<ResourcesAllocated> AllocateResourcesAsync(MountsStaged state, UndoStack undo)
    {
        var defaults = services.Options.Resources;
        var slots = new ResourceSlots(state.Request.Cpus ?? defaults.DefaultCpus, state.Request.MemoryBytes ?? defaults.DefaultMemoryBytes);
        var allocation = services.Resources.Allocate(state.KernelId, slots, state.Runtime.OverheadBytes);
        undo.Push("allocate-resources", _ =>
        {
            services.Resources.Release(state.KernelId);
            return Task.CompletedTask;
        });
        return Task.FromResult(new ResourcesAllocated(state, allocation));
    }

    private Task<PortsAllocated> AllocatePortsAsync(ResourcesAllocated state, UndoStack undo)
    {
        var servicePorts = state.Services.SelectMany(s => s.ContainerPorts.Select(p => (s.Name, s.Protocol, Port: p))).ToList();
        var hostPorts = services.Ports.Allocate(2 + servicePorts.Count);
        undo.Push("allocate-ports", _ =>
        {
            services.Ports.Release(hostPorts);
            return Task.CompletedTask;
        });
        var ports = new List<PublishedPort>
        {
            new("replin", "tcp", ReplInPort, "127.0.0.1", hostPorts[0]),
            new("replout", "tcp", ReplOutPort, "127.0.0.1", hostPorts[1]),
        };
        for (var i = 0; i < servicePorts.Count; i++)
        {
            var (name, protocol, port) = servicePorts[i];
            ports.Add(new PublishedPort(name, protocol, port, services.Options.ServiceBindHost, hostPorts[2 + i]));
        }
        return Task.FromResult(new PortsAllocated(state, ports));
    }

    private async Task<ScratchReady> PrepareScratchAsync(PortsAllocated state, UndoStack undo, CancellationToken ct)
    {
        // First, and left running: CNI ADD and the guard need only the ports, and take longer than the scratch dir and disk.
        var network = StartAttachingNetwork(state, undo, ct);
        var request = state.Request;
        var labels = state.Image.Labels;
        var cpus = state.Allocation.Slots.Cpus;
        var environ = ImageLabels.Environment(request.Environment, labels, cpus);
        var runner = new JsonObject
        {
            ["runtimeType"] = labels.GetValueOrDefault(ImageLabels.RuntimeType) ?? "python",
            ["runtimePath"] = labels.GetValueOrDefault(ImageLabels.RuntimePath) ?? "/usr/bin/python3",
            ["workDir"] = ScratchDirectory.GuestWorkPath,
            ["replInPort"] = ReplInPort,
            ["replOutPort"] = ReplOutPort,
        };
        if (request.Pool is not null)
            runner["pooled"] = true; // holds bootstrap and interpreter until a claim personalises it
        if (request.Uid is { } uid)
            runner["uid"] = uid;
        if (request.Gid is { } gid)
            runner["gid"] = gid;
        // Per session: whoever reaches the published runner ports must not be able to drive this runner. An image's
        // own runner speaks the NULL mechanism only: no keys (its ports are published on 127.0.0.1 alone, like ours).
        var (curve, runnerKeyFile) = state.Steering.RunnerCommand is null ? RunnerCurveKeys.Generate() : (null, null);
        if (curve is not null)
        {
            // Our runner: sequenced output with a replay buffer (docs/DURABLE-RUNS.md); an image's own speaks plain frames.
            runner["sequencedOutput"] = true;
            runner["replayBufferBytes"] = services.Options.RunnerReplayBufferBytes;
        }
        var config = new ScratchConfig
        {
            Environ = environ,
            Resource = new Dictionary<string, string>
            {
                ["CID"] = state.KernelId,
                ["KERNEL_ID"] = state.KernelId,
                ["SESSION_ID"] = request.SessionId ?? state.KernelId,
                ["RUNTIME_CLASS"] = state.Runtime.Class.Name,
                ["CPU_SLOTS"] = cpus.ToString("0.##", CultureInfo.InvariantCulture),
                ["MEM_SLOTS"] = state.Allocation.Slots.MemoryBytes.ToString(CultureInfo.InvariantCulture),
            },
            IntrinsicPorts = new IntrinsicPorts(ReplInPort, ReplOutPort),
            Runner = runner,
            RunnerCurveKeyFile = runnerKeyFile,
        };
        undo.Push("scratch", async undoCt =>
        {
            var existing = ScratchDirectory.Open(services.Options.ScratchRoot, state.KernelId);
            await existing.RemoveAsync(cancellationToken: undoCt).ConfigureAwait(false);
        });
        var scratch = await ScratchDirectory.CreateAsync(services.Options.ScratchRoot, state.KernelId, config,
            request.Uid ?? 0, request.Gid ?? 0, cancellationToken: ct).ConfigureAwait(false);

        Directory.CreateDirectory(services.Options.LogDir, HostDirectories.DataDirPermissions.PrivateDirectory);
        var logPath = Path.Combine(services.Options.LogDir, state.KernelId + ".log");
        SessionLog.Create(logPath);
        undo.Push("session-log", _ =>
        {
            File.Delete(logPath);
            return Task.CompletedTask;
        });
        return new ScratchReady(state, scratch, logPath, curve, network);
    }

    private async Task<ScratchReady> MountScratchDiskAsync(ScratchReady state, UndoStack undo, CancellationToken ct)
    {
        var size = state.Request.ScratchBytes ?? services.Options.Resources.DefaultScratchBytes;
        if (size != 0) // 0: configured off, the work dir shares the host's disk
        {
            var disks = ScratchDisks.For(services.Options, services.Logger);
            undo.Push("scratch-disk", undoCt => disks.UnmountAsync(state.KernelId, state.Scratch.WorkPath, undoCt));
            await disks.MountAsync(state.KernelId, state.Scratch.WorkPath, size, state.Request.Uid ?? 0, state.Request.Gid ?? 0, ct).ConfigureAwait(false);
        }
        // Into the work dir as it will be seen (on the scratch disk, if any): where Backend.AI's runner looks for it.
        if (state.Request.BootstrapScript is { } bootstrap)
        {
            await state.Scratch.WriteWorkFileAsync(ScratchDirectory.BootstrapFile, bootstrap, ScratchDirectory.BootstrapFileMode,
                ((uint)(state.Request.Uid ?? 0), (uint)(state.Request.Gid ?? 0)), ct).ConfigureAwait(false);
        }
        return state;
    }

    /// <summary>
    /// Starts the session's network attach (netns, CNI ADD, guard) beside the scratch steps; step network waits for it.
    /// Its undo is registered before it starts: a half-done ADD is undone by DEL just the same, once the ADD has ended,
    /// so a step that fails while the ADD is still running never races it.
    /// </summary>
    private Task<NetworkAttachment> StartAttachingNetwork(PortsAllocated state, UndoStack undo, CancellationToken ct)
    {
        var mappings = state.Ports.Select(p => new PortMapping(p.HostIp, p.HostPort, p.ContainerPort, "tcp")).ToList();
        var egress = state.Request.Egress ?? services.Options.DefaultEgress;
        var attaching = Task.Run(() => services.Network.AttachAsync(state.KernelId, mappings, egress, ct), CancellationToken.None);
        undo.Push("network", async undoCt =>
        {
            try
            {
                await attaching.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // Whatever the ADD left, the DEL below removes; the failure itself is step network's to report.
            }
            await services.Network.DetachAsync(state.KernelId, undoCt).ConfigureAwait(false);
        });
        return attaching;
    }

    private async Task<SessionParts> AttachNetworkAsync(ScratchReady state, UndoStack undo, CancellationToken ct)
    {
        var network = await state.Network.WaitAsync(ct).ConfigureAwait(false);
        // The resolvers the guard lets through on port 53 are the ones the session is told about.
        await File.WriteAllTextAsync(Path.Combine(state.Scratch.ConfigPath, SessionSpec.ResolvConfName),
            string.Concat(services.Resolvers.Select(r => $"nameserver {r}\n")), ct).ConfigureAwait(false);
        return new SessionParts(state.Request, state.KernelId, state.Runtime, state.Image, state.Allocation, state.Ports, state.Scratch,
            state.LogPath, state.RunnerCurve, state.Steering, network, state.StagedMounts);
    }

    /// <summary>
    /// Stages the very inodes step validate opened (under an allowed root, without following links): the
    /// runtime mounts the staging path, so a swap after validate changes nothing.
    /// </summary>
    private Task<MountsStaged> StageMountsAsync(ImageResolved state, UndoStack undo)
    {
        IReadOnlyList<string> staged;
        try
        {
            staged = services.MountStaging.Stage(state.KernelId, state.MountSources);
        }
        catch (MountSourceException e)
        {
            throw new SessionRequestException(e.Message);
        }
        finally
        {
            // Staged or not, the descriptors have done their work.
            state.MountSources.Dispose();
        }
        // Stage undoes its own partial work; this undoes a whole one.
        undo.Push("mounts", _ =>
        {
            services.MountStaging.Release(state.KernelId);
            return Task.CompletedTask;
        });
        return Task.FromResult(new MountsStaged(state, staged));
    }

    private async Task<SessionRecord> StartContainerAsync(SessionParts state, UndoStack undo, CancellationToken ct)
    {
        var request = state.Request;
        var options = services.Options;
        var allocation = state.Allocation;
        var kernelId = state.KernelId;
        var record = new SessionRecord
        {
            KernelId = kernelId,
            SessionId = request.SessionId ?? kernelId,
            ContainerId = kernelId,
            Image = state.Image.Name,
            RuntimeClass = state.Runtime.Class.Name,
            Cpus = allocation.Slots.Cpus,
            MemoryBytes = allocation.Slots.MemoryBytes,
            CpuSet = allocation.CpuSet,
            ShmBytes = request.ShmBytes ?? options.Resources.DefaultShmBytes,
            Ports = state.Ports.ToList(),
            NetnsPath = state.Network.NetnsPath,
            ScratchDir = state.Scratch.SessionPath,
            LogPath = state.LogPath,
            StopSignal = state.Image.Config.Config?.StopSignal ?? "SIGTERM",
            CreatedAt = DateTimeOffset.UtcNow,
            Request = request with { KernelId = kernelId, RuntimeClass = state.Runtime.Class.Name },
            RunnerCurve = state.RunnerCurve,
            RunnerCommand = state.Steering.RunnerCommand,
            Features = state.Steering.Features,
            ServicePorts = state.Steering.ServicePorts,
        };

        // The spec binds the staged, pinned copies, never the requested paths themselves.
        var staged = request with { Mounts = request.Mounts.Select((m, i) => m with { HostPath = state.StagedMounts[i] }).ToList() };
        var specOpts = SessionSpec.Options(new SessionSpecInputs(record, staged, state.Scratch.WorkPath, state.Scratch.ConfigPath,
            state.Runtime.Class, options)
        {
            // The container's own environment too: an image's runner may not read environ.txt.
            Environment = ImageLabels.Environment(request.Environment, state.Image.Labels, allocation.Slots.Cpus),
        });

        // The parent may have been removed since start (an operator's clean-up): runtimes would make a broken one.
        await services.Cgroups.EnsureAsync(ct).ConfigureAwait(false);
        var launch = new ContainerLaunch(kernelId, new ResolvedImage(state.Image.Name, state.Image.Config, state.Image.ChainId), state.Runtime.Class)
        {
            // The runner replaces the image's command and entrypoint (WithProcessArgs below).
            Args = SessionSpec.ProcessArgs(record),
            SpecOpts = specOpts,
            Labels = SessionLabels.For(record, options.AgentId, request.Labels),
        };
        await new ContainerLauncher(services.Containerd, services.Logger).LaunchAsync(launch with { Io = StartLogRelay(state, undo) }, ct).ConfigureAwait(false);
        undo.Push("container", undoCt =>
            TaskReaper.ReapContainerAsync(services.Containerd, kernelId, TaskReaper.SigKill, TimeSpan.Zero, services.Logger, undoCt));
        return record;
    }

    /// <summary>
    /// The shim writes the container's stdout and stderr into a FIFO that the agent carries into the log under its cap
    /// (Logs/LogRelay), not into the log file itself: a file the shim appends to can only be cut after the fact.
    /// </summary>
    private TaskIo StartLogRelay(SessionParts state, UndoStack undo)
    {
        var kernelId = state.KernelId;
        // Pushed before the container's undo, so it runs after it: the shim has let go of the FIFO by then.
        undo.Push("log-relay", _ =>
        {
            services.LogRelays.Stop(kernelId, removeFifo: true);
            return Task.CompletedTask;
        });
        var fifo = services.LogRelays.Start(kernelId, state.LogPath);
        return new TaskIo(Stdout: fifo, Stderr: fifo);
    }

    private async Task<Session> WaitForRunnerAsync(SessionRecord record, UndoStack undo, CancellationToken ct)
    {
#pragma warning disable CA2000 // the undo below disposes it on failure; on success the session owns it
        var runner = new KernelRunnerClient(new KernelRunnerClientOptions
        {
            InputPort = record.ReplInPort,
            OutputPort = record.ReplOutPort,
            ReplyTimeout = TimeSpan.FromSeconds(2),
            Curve = record.RunnerCurve,
            MaxMessageSize = services.Options.RunnerMessageMaxBytes,
            SequencedOutput = record.RunnerCurve is not null,
            // The runner is still starting: retry the refused connects every 10 ms without backing off (a backoff to
            // 50 ms cost a create 25 ms on average once the runner listened; a refused connect on 127.0.0.1 costs ~nothing).
            ReconnectInterval = TimeSpan.FromMilliseconds(10),
            ReconnectIntervalMax = TimeSpan.FromMilliseconds(10),
        });
#pragma warning restore CA2000
        undo.Push("runner-client", _ => runner.DisposeAsync().AsTask());
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        deadline.CancelAfter(services.Options.RunnerReadyTimeout);
        while (true)
        {
            if (await services.Containerd.Tasks.FindEndedAsync(record.ContainerId, ct).ConfigureAwait(false) is { } ended)
                throw new InvalidOperationException($"the session's runner exited before it answered (exit {ended.ExitStatus}); its log ends with:\n{LogTail(record.LogPath)}");
            try
            {
                await runner.GetStatusAsync(deadline.Token).ConfigureAwait(false);
                break;
            }
            catch (Exception e) when (e is TimeoutException or RunnerUnavailableException || (e is OperationCanceledException && !ct.IsCancellationRequested))
            {
                if (deadline.IsCancellationRequested)
                {
                    throw new TimeoutException($"the runner did not answer within {services.Options.RunnerReadyTimeout.TotalSeconds:0} s" +
                        (record.RunnerCommand is { } command
                            ? $" (the image's own runner '{string.Join(' ', command)}', driven without CURVE: does it bind PULL on {ReplInPort} and PUSH on {ReplOutPort} and answer status?)"
                            : record.RunnerCurve is null ? "" : $" (if its log says it is serving, the CURVE handshake failed: the runner does not hold this session's key from {ScratchDirectory.RunnerCurveKeyFile})") +
                        $"; its log ends with:\n{LogTail(record.LogPath)}");
                }
            }
        }
        var servicePorts = await ReadServiceAppsAsync(runner, record, ct).ConfigureAwait(false);
        return new Session(record with { ServicePorts = servicePorts }, runner);
    }

    /// <summary>How long a create waits for the runner's get-apps answer before it goes on without it.</summary>
    internal static readonly TimeSpan GetAppsTimeout = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Backend.AI's agent asks the ready runner for its apps and merges their definitions (url template, allowed
    /// arguments and envs) into the declared service ports. A runner that does not answer (an image's own older
    /// runner) costs a short wait and a log line, never the session.
    /// </summary>
    private async Task<IReadOnlyList<SessionServicePort>> ReadServiceAppsAsync(KernelRunnerClient runner, SessionRecord record, CancellationToken ct)
    {
        if (record.ServicePorts.Count == 0)
            return record.ServicePorts; // nothing declared: nothing to merge into
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(GetAppsTimeout);
        try
        {
            var apps = await QueryAppsAsync(runner, timeout.Token).ConfigureAwait(false);
            return ServiceApps.Merge(record.ServicePorts, apps);
        }
        catch (Exception e) when (e is TimeoutException or RunnerUnavailableException or System.Text.Json.JsonException or InvalidDataException
                                   || (e is OperationCanceledException && !ct.IsCancellationRequested))
        {
            services.Logger.LogWarning("session {KernelId}: the runner did not answer get-apps ({Error}); its service ports keep what the image declares",
                record.KernelId, e.Message);
            return record.ServicePorts;
        }
    }

    /// <summary>The one place the agent asks a runner for its apps (all of them).</summary>
    private static async Task<System.Text.Json.JsonElement> QueryAppsAsync(KernelRunnerClient runner, CancellationToken ct)
    {
        var apps = await runner.GetAppsAsync("", ct).ConfigureAwait(false);
        using var document = System.Text.Json.JsonDocument.Parse(apps.Json);
        return document.RootElement.Clone();
    }

    private async Task<Session> RegisterAsync(Session session, UndoStack undo, CancellationToken ct)
    {
        await services.Store.SaveAsync(session.Record, ct).ConfigureAwait(false);
        undo.Push("register", _ =>
        {
            services.Store.Delete(session.KernelId);
            return Task.CompletedTask;
        });
        return session;
    }

    internal static string LogTail(string path, int maxBytes = 4096)
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            if (stream.Length > maxBytes)
                stream.Seek(-maxBytes, SeekOrigin.End);
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd();
        }
        catch (IOException)
        {
            return "(no log)";
        }
    }
}
