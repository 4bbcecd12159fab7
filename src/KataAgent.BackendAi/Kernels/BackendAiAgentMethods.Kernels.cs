using System.Globalization;
using System.Text.Json;
using KataAgent.BackendAi.Rpc;
using KataAgent.BackendAi.Serialization;
using KataAgent.Core.Sessions;
using KataAgent.Images.Registry;
using Microsoft.Extensions.Logging;
using static KataAgent.BackendAi.Kernels.RpcArgs;

namespace KataAgent.BackendAi.Kernels;

/// <summary>Images and the kernels' lifecycle: check_and_pull, create_kernels, destroy_kernel, restart, sync, reset.</summary>
public sealed partial class BackendAiAgentMethods
{
    private static readonly Task<object?> NoResult = Task.FromResult<object?>(null);

    private static Task<object?> PingAsync(RpcCall call, CancellationToken cancellationToken) =>
        Task.FromResult(Get(call, 0, "msg"));

    /// <summary>Our image name for a Backend.AI canonical (the configured alias, else the canonical itself).</summary>
    private string ImageNameOf(string canonical) => _options.ImageNames.GetValueOrDefault(canonical, canonical);

    private static double Timestamp() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;

    private Task<object?> CheckAndPullAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var configs = Map(Get(call, 0, "image_configs"), "image_configs");
        var tasks = new Dictionary<object, object?>();
        foreach (var (key, value) in configs)
        {
            var canonical = Text(key, "image_configs key");
            var config = Map(value, $"image_configs['{canonical}']");
            var reference = OptionalText(Field(config, "canonical"), "canonical") ?? canonical;
            var registry = RegistryOptionsFor(reference, config, $"image_configs['{canonical}']");
            var taskId = Guid.NewGuid().ToString("N");
            RunInBackground(ct => EnsureImageAsync(canonical, reference, registry, ct));
            tasks[canonical] = taskId;
        }
        return Task.FromResult<object?>(tasks);
    }

    /// <summary>Each image ends in image_pull_finished or image_pull_failed (Sokovan waits for one of them).</summary>
    private async Task EnsureImageAsync(string canonical, string reference, RegistryOptions registryOptions, CancellationToken cancellationToken)
    {
        var name = ImageNameOf(canonical);
        if (await _agent.Containerd.Images.FindAsync(name, cancellationToken).ConfigureAwait(false) is not null)
        {
            await EmitAsync("image_pull_finished", canonical, AgentId, Timestamp(), "Image already exists").ConfigureAwait(false);
            return;
        }
        if (!_pulling.TryAdd(canonical, 0))
            return; // the pull under way announces the end
        try
        {
            await EmitAsync("image_pull_started", canonical, AgentId, Timestamp()).ConfigureAwait(false);
            await PullImageAsync(reference, name, registryOptions, cancellationToken).ConfigureAwait(false);
            await EmitAsync("image_pull_finished", canonical, AgentId, Timestamp()).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            await EmitAsync("image_pull_failed", canonical, AgentId, $"{e.GetType().Name}('{e.Message}')").ConfigureAwait(false);
        }
        finally
        {
            _pulling.TryRemove(canonical, out _);
        }
    }

    private async Task PullImageAsync(string reference, string name, RegistryOptions registryOptions, CancellationToken cancellationToken)
    {
        using var registry = new RegistryClient(registryOptions, _logger);
        var pulled = await new ImagePuller(_agent.Containerd, registry, _logger).PullAsync(reference,
            new PullOptions { Name = name, MaxExpandedBytes = _agent.Options.ImageMaxExpandedBytes }, null, cancellationToken).ConfigureAwait(false);
        _logger.LogInformation("pulled {Reference} as {Image}", reference, pulled.Name);
    }

    /// <summary>The manager's ImageConfig.registry credentials ({name, url, username, password}) for the reference's registry host.</summary>
    private static RegistryOptions RegistryOptionsFor(string reference, Dictionary<object, object?> imageConfig, string what)
    {
        if (Field(imageConfig, "registry") is not { } registryValue || !ImageReference.TryParse(reference, out var parsed))
            return new RegistryOptions();
        var registry = Map(registryValue, $"{what}.registry");
        var username = OptionalText(Field(registry, "username"), $"{what}.registry.username");
        var password = OptionalText(Field(registry, "password"), $"{what}.registry.password");
        if (username is null && password is null)
            return new RegistryOptions();
        return new RegistryOptions
        {
            Hosts = new Dictionary<string, RegistryHostOptions> { [parsed.Registry] = new() { Username = username, Password = password } },
        };
    }

    /// <summary>
    /// As BA25's create_kernel: a missing image is pulled before the kernel is created (kernel_pulling with the image's
    /// canonical as its reason) unless the image is local or auto_pull is none (then ImageNotAvailable). A present image
    /// is used as it is: its digest is not compared with the manager's.
    /// </summary>
    private async Task PullIfMissingAsync(string kernelId, string sessionId, Dictionary<object, object?> config, string imageName, string what,
        CancellationToken cancellationToken)
    {
        if (await _agent.Containerd.Images.FindAsync(imageName, cancellationToken).ConfigureAwait(false) is not null)
            return;
        var image = RequireMap(config, "image", what);
        var canonical = Text(Field(image, "canonical"), $"{what}.image.canonical");
        if (Bool(Field(image, "is_local"), $"{what}.image.is_local", false))
            return; // nowhere to pull it from: the create names the missing image
        var autoPull = OptionalText(Field(config, "auto_pull"), $"{what}.auto_pull")
            ?? OptionalText(Field(image, "auto_pull"), $"{what}.image.auto_pull") ?? "digest";
        if (autoPull == "none")
            throw new BackendAiRpcException("ImageNotAvailable", $"the image {canonical} is not present on this agent and auto_pull is none");
        await EmitAsync("kernel_pulling", kernelId, sessionId, canonical, new Dictionary<object, object?>()).ConfigureAwait(false);
        await PullImageAsync(canonical, imageName, RegistryOptionsFor(canonical, image, $"{what}.image"), cancellationToken).ConfigureAwait(false);
    }

    private Task<object?> CheckPullingAsync(RpcCall call, CancellationToken cancellationToken) =>
        Task.FromResult<object?>(_pulling.ContainsKey(Text(Get(call, 0, "image_canonical"), "image_canonical")));

    private Task<object?> CheckCreatingAsync(RpcCall call, CancellationToken cancellationToken) =>
        Task.FromResult<object?>(_creating.ContainsKey(Id(Get(call, 0, "kernel_id"), "kernel_id")));

    private async Task<object?> CreateKernelsAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var sessionId = Id(Get(call, 0, "raw_session_id"), "raw_session_id");
        var kernelIds = Array(Get(call, 1, "raw_kernel_ids"), "raw_kernel_ids").Select((k, i) => Id(k, $"raw_kernel_ids[{i}]")).ToList();
        var configs = Array(Get(call, 2, "raw_configs"), "raw_configs");
        if (kernelIds.Count != configs.Length)
            throw new BackendAiRpcException("ValueError", $"{kernelIds.Count} kernel ids for {configs.Length} configs");
        // cluster_info and kernel_image_refs: everything we use is in each config (single-container sessions).
        var creations = kernelIds.Select((kernelId, i) => CreateKernelAsync(sessionId, kernelId, configs[i], $"raw_configs[{i}]", cancellationToken)).ToList();
        try
        {
            return await Task.WhenAll(creations).ConfigureAwait(false);
        }
        catch when (creations.Count(t => t.IsFaulted || t.IsCanceled) > 1)
        {
            var failures = creations.Where(t => t.IsFaulted).SelectMany(t => t.Exception!.InnerExceptions).Select(e => e.Message);
            throw new BackendAiRpcException("TaskGroupError", "several kernels failed to create: " + string.Join("; ", failures));
        }
    }

    private async Task<object?> CreateKernelAsync(string sessionId, string kernelId, object? rawConfig, string what, CancellationToken cancellationToken)
    {
        if (!_creating.TryAdd(kernelId, 0))
            throw new BackendAiRpcException("InvalidArgument", $"kernel {kernelId} is already being created");
        try
        {
            await EmitAsync("kernel_preparing", kernelId, sessionId, "", new Dictionary<object, object?>()).ConfigureAwait(false);
            Session session;
            try
            {
                var config = Map(rawConfig, what);
                var request = BuildRequest(sessionId, kernelId, config, what);
                await PullIfMissingAsync(kernelId, sessionId, config, request.Image, what, cancellationToken).ConfigureAwait(false);
                await EmitAsync("kernel_creating", kernelId, sessionId, "", new Dictionary<object, object?>()).ConfigureAwait(false);
                _terminations.Forget(kernelId);
                session = await _agent.CreateSessionAsync(request, null, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                // Core rolled the session back; the manager learns the kernel is gone, as from Backend.AI's agent.
                if (_terminations.TryClaim(kernelId))
                    await EmitAsync("kernel_terminated", kernelId, sessionId, KernelLifecycleReasons.FailedToCreate, -1L).ConfigureAwait(false);
                if (e is BackendAiRpcException or OperationCanceledException)
                    throw;
                var name = e is SessionRequestException or Core.Mounts.MountSourceException ? "InvalidArgument" : "AgentError";
                throw new BackendAiRpcException(name, $"Kernel failed to create container (k:{kernelId}, detail: {e.Message})", e);
            }
            var info = CreationInfo(session);
            await EmitAsync("kernel_started", kernelId, sessionId, "", info).ConfigureAwait(false);
            return info;
        }
        finally
        {
            _creating.TryRemove(kernelId, out _);
        }
    }

    /// <summary>KernelCreationConfig (BA25 common/types.py) as our session request.</summary>
    private SessionRequest BuildRequest(string sessionId, string kernelId, Dictionary<object, object?> config, string what)
    {
        var image = RequireMap(config, "image", what);
        var canonical = Text(Field(image, "canonical") ?? throw new BackendAiRpcException("KeyError", $"'canonical' (missing in {what}.image)"), $"{what}.image.canonical");
        var slots = Slots(Field(config, "resource_slots"), $"{what}.resource_slots");
        var resourceOptions = Field(config, "resource_opts") is { } ro ? Map(ro, $"{what}.resource_opts") : [];
        var scalingGroup = OptionalText(Field(config, "scaling_group"), $"{what}.scaling_group") ?? _options.ScalingGroup;
        var environ = Field(config, "environ") is { } env
            ? Map(env, $"{what}.environ").ToDictionary(p => Text(p.Key, $"{what}.environ key"), p => Text(p.Value, $"{what}.environ['{p.Key}']"))
            : [];
        var preopenPorts = (Field(config, "preopen_ports") is { } pp ? Array(pp, $"{what}.preopen_ports") : [])
            .Select((p, i) => (int)(Long(p, $"{what}.preopen_ports[{i}]") ?? throw TypeError($"{what}.preopen_ports[{i}]", "an integer", null)))
            .Select(port => new ServicePortDefinition(port.ToString(CultureInfo.InvariantCulture), "preopen", [port]))
            .ToList();
        // Validated only: Backend.AI's manager enforces idleness itself (its idle checkers see app traffic, which the
        // agent's idle clock does not), as BA25's agent leaves idle_timeout alone. So the agent's own idle timeout is off
        // for the manager's sessions (below), whatever timeouts.idle says.
        _ = Long(Field(config, "idle_timeout"), $"{what}.idle_timeout");
        return new SessionRequest
        {
            IdleTimeout = TimeSpan.Zero,
            Image = ImageNameOf(canonical),
            RuntimeClass = _options.RuntimeClassByImage.GetValueOrDefault(canonical)
                ?? _options.RuntimeClassByScalingGroup.GetValueOrDefault(scalingGroup)
                ?? _options.RuntimeClass,
            KernelId = kernelId,
            SessionId = sessionId,
            Cpus = slots.TryGetValue("cpu", out var cpu) ? (double)cpu : null,
            MemoryBytes = slots.TryGetValue("mem", out var mem) ? (long)mem : null,
            ShmBytes = Field(resourceOptions, "shmem") is { } shm ? (long)Amount(shm, $"{what}.resource_opts.shmem") : null,
            Environment = environ,
            Mounts = Mounts(Field(config, "mounts"), $"{what}.mounts"),
            BootstrapScript = OptionalText(Field(config, "bootstrap_script"), $"{what}.bootstrap_script") is { Length: > 0 } script ? script : null,
            ServicePorts = preopenPorts,
            Uid = (int?)Long(Field(config, "uid"), $"{what}.uid"),
            Gid = (int?)Long(Field(config, "main_gid"), $"{what}.main_gid"),
            Labels = new Dictionary<string, string>
            {
                ["backendai.scaling-group"] = scalingGroup,
                ["backendai.image-canonical"] = canonical,
                // The status heartbeat reports only these: the manager purges every container it does not know.
                [Events.BackendAiSessionLabels.ManagedBy] = Events.BackendAiSessionLabels.ManagerValue,
            },
        };
    }

    /// <summary>resource_slots: {slot: amount string} (or a pickled ResourceSlot of Decimals).</summary>
    private static Dictionary<string, decimal> Slots(object? value, string what)
    {
        if (value is null)
            return [];
        if (value is ResourceSlot slot)
            return new Dictionary<string, decimal>(slot);
        var slots = Map(value, what).ToDictionary(p => Text(p.Key, $"{what} key"), p => Amount(p.Value, $"{what}['{p.Key}']"));
        if (slots.TryGetValue("cpu", out var cpu) && cpu <= 0)
            throw new BackendAiRpcException("InvalidArgument", $"{what}['cpu'] must be positive (got {cpu})");
        if (slots.TryGetValue("mem", out var mem) && mem <= 0)
            throw new BackendAiRpcException("InvalidArgument", $"{what}['mem'] must be positive (got {mem})");
        return slots;
    }

    /// <summary>VFolderMount JSON (maps, or their JSON text): host_path, kernel_path, mount_perm ro|rw|wd. Core checks the allow-list.</summary>
    private static List<MountRequest> Mounts(object? value, string what)
    {
        var mounts = new List<MountRequest>();
        if (value is null)
            return mounts;
        var items = Array(value, what);
        for (var i = 0; i < items.Length; i++)
        {
            var name = $"{what}[{i}]";
            var mount = items[i] is string json ? JsonMap(json, name) : Map(items[i], name);
            var hostPath = Text(Field(mount, "host_path") ?? throw new BackendAiRpcException("KeyError", $"'host_path' (missing in {name})"), $"{name}.host_path");
            var kernelPath = Text(Field(mount, "kernel_path") ?? throw new BackendAiRpcException("KeyError", $"'kernel_path' (missing in {name})"), $"{name}.kernel_path");
            var permission = OptionalText(Field(mount, "mount_perm"), $"{name}.mount_perm") ?? "ro";
            var readOnly = permission switch
            {
                "ro" => true,
                "rw" or "wd" => false,
                _ => throw new BackendAiRpcException("InvalidArgument", $"{name}.mount_perm '{permission}' is not one of ro, rw, wd"),
            };
            mounts.Add(new MountRequest(hostPath, kernelPath, readOnly));
        }
        return mounts;
    }

    private static Dictionary<object, object?> JsonMap(string json, string what)
    {
        try
        {
            using var document = JsonDocument.Parse(json);
            return Map(FromJson(document.RootElement), what);
        }
        catch (JsonException e)
        {
            throw new BackendAiRpcException("ValueError", $"{what}: not JSON ({e.Message})");
        }
    }

    /// <summary>What create_kernels returns and kernel_started carries (BA25 KernelCreationResult).</summary>
    private Dictionary<object, object?> CreationInfo(Session session)
    {
        var record = session.Record;
        var servicePorts = record.ServicePorts.Select(service => (object?)new Dictionary<object, object?>
        {
            ["name"] = service.Name,
            ["protocol"] = service.Protocol,
            ["container_ports"] = service.ContainerPorts.Select(p => (object?)(long)p).ToArray(),
            ["host_ports"] = service.ContainerPorts
                .Select(p => record.Ports.FirstOrDefault(published => published.Name == service.Name && published.ContainerPort == p) is { } published
                    ? (object?)(long)published.HostPort : null)
                .ToArray(),
            ["is_inference"] = false,
        }).ToArray();
        var cpus = ((decimal)record.Cpus).ToString(CultureInfo.InvariantCulture);
        var memory = record.MemoryBytes.ToString(CultureInfo.InvariantCulture);
        var cores = record.CpuSet.Length > 0 ? record.CpuSet.Split(',', StringSplitOptions.RemoveEmptyEntries) : ["0"];
        var mounts = (record.Request?.Mounts ?? []).Select(m => (object?)new object?[] { m.HostPath, m.ContainerPath, m.ReadOnly ? "ro" : "rw" }).ToArray();
        return new Dictionary<object, object?>
        {
            ["id"] = record.KernelId,
            ["kernel_host"] = _options.KernelHost,
            ["repl_in_port"] = (long)record.ReplInPort,
            ["repl_out_port"] = (long)record.ReplOutPort,
            // The pty ports of Backend.AI's legacy kernels: our sessions have none.
            ["stdin_port"] = 0L,
            ["stdout_port"] = 0L,
            ["service_ports"] = servicePorts,
            ["container_id"] = record.ContainerId,
            ["resource_spec"] = new Dictionary<object, object?>
            {
                ["slots"] = new Dictionary<object, object?> { ["cpu"] = cpus, ["mem"] = memory },
                ["allocations"] = new Dictionary<object, object?>
                {
                    // The cpu share is spread over the cores it may run on; the manager sums the values.
                    ["cpu"] = new Dictionary<object, object?>
                    {
                        ["cpu"] = cores.ToDictionary(c => (object)c.Trim(), _ => (object?)(((decimal)record.Cpus) / cores.Length).ToString(CultureInfo.InvariantCulture)),
                    },
                    ["mem"] = new Dictionary<object, object?> { ["mem"] = new Dictionary<object, object?> { ["root"] = memory } },
                },
                ["scratch_disk_size"] = record.Request?.ScratchBytes ?? _agent.Options.Resources.DefaultScratchBytes,
                ["mounts"] = mounts,
            },
            ["attached_devices"] = new Dictionary<object, object?>(),
            ["agent_addr"] = _options.AgentAddress,
            ["scaling_group"] = _options.ScalingGroup,
        };
    }

    private async Task<object?> DestroyKernelAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var kernelId = Id(Get(call, 0, "kernel_id"), "kernel_id");
        var sessionId = Id(Get(call, 1, "session_id"), "session_id");
        var reason = OptionalText(Get(call, 2, "reason", required: false), "reason") ?? KernelLifecycleReasons.UserRequested;
        var suppressEvents = Bool(Get(call, 3, "suppress_events", required: false), "suppress_events", false);
        await DestroyAndAnnounceAsync(kernelId, sessionId, reason, suppressEvents, cancellationToken).ConfigureAwait(false);
        return null;
    }

    /// <summary>Destroys the kernel (idempotent) and announces kernel_terminated once, with the destroy's reason.</summary>
    private async Task DestroyAndAnnounceAsync(string kernelId, string sessionId, string reason, bool suppressEvents, CancellationToken cancellationToken)
    {
        var live = FindLive(kernelId) is not null;
        var announce = _terminations.TryClaim(kernelId) && !suppressEvents;
        await _agent.DestroySessionAsync(kernelId, false, DestroyedBy.Manager, cancellationToken).ConfigureAwait(false);
        if (!announce)
            return;
        if (!live)
        {
            await EmitAsync("kernel_terminated", kernelId, sessionId, KernelLifecycleReasons.AlreadyTerminated, -1L).ConfigureAwait(false);
            return;
        }
        var exitCode = _agent.FindEndedSession(kernelId)?.ExitCode;
        await EmitAsync("kernel_terminated", kernelId, sessionId, reason, (long)(exitCode ?? -1)).ConfigureAwait(false);
    }

    private async Task<object?> RestartKernelAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var sessionId = Id(Get(call, 0, "session_id"), "session_id");
        var kernelId = Id(Get(call, 1, "kernel_id"), "kernel_id");
        // kernel_image and updated_config: the restart keeps the kernel's image and settings (Core restarts from its record).
        if (FindLive(kernelId) is null)
            throw new BackendAiRpcException("KeyError", $"no kernel {kernelId} on this agent");
        await EmitAsync("kernel_preparing", kernelId, sessionId, KernelLifecycleReasons.Restarting, new Dictionary<object, object?>()).ConfigureAwait(false);
        Session session;
        using (_terminations.BeginRestart(kernelId))
            session = await _agent.RestartSessionAsync(kernelId, cancellationToken).ConfigureAwait(false);
        var info = CreationInfo(session);
        await EmitAsync("kernel_started", kernelId, sessionId, KernelLifecycleReasons.Restarting, info).ConfigureAwait(false);
        return info;
    }

    /// <summary>The manager's list is the truth: kernels it has that we lack are announced gone; ours it lacks are destroyed.</summary>
    private async Task<object?> SyncKernelRegistryAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var pairs = Array(Get(call, 0, "raw_kernel_session_ids"), "raw_kernel_session_ids");
        var listed = new HashSet<string>(StringComparer.Ordinal);
        var live = ManagerSessions().ToDictionary(s => s.KernelId, StringComparer.Ordinal);
        for (var i = 0; i < pairs.Length; i++)
        {
            var pair = Array(pairs[i], $"raw_kernel_session_ids[{i}]");
            if (pair.Length != 2)
                throw new BackendAiRpcException("ValueError", $"raw_kernel_session_ids[{i}] is not a (kernel_id, session_id) pair");
            var kernelId = Id(pair[0], $"raw_kernel_session_ids[{i}][0]");
            var sessionId = Id(pair[1], $"raw_kernel_session_ids[{i}][1]");
            listed.Add(kernelId);
            if (!live.ContainsKey(kernelId) && !_creating.ContainsKey(kernelId))
                await EmitAsync("kernel_terminated", kernelId, sessionId, KernelLifecycleReasons.AlreadyTerminated, -1L).ConfigureAwait(false);
        }
        foreach (var (kernelId, session) in live)
        {
            if (!listed.Contains(kernelId))
                await DestroyAndAnnounceAsync(kernelId, session.Record.SessionId, KernelLifecycleReasons.NotFoundInManager, false, cancellationToken).ConfigureAwait(false);
        }
        return null;
    }

    private async Task<object?> ResetAgentAsync(RpcCall call, CancellationToken cancellationToken)
    {
        await Task.WhenAll(ManagerSessions().Select(s =>
            DestroyAndAnnounceAsync(s.KernelId, s.Record.SessionId, KernelLifecycleReasons.AgentReset, false, cancellationToken))).ConfigureAwait(false);
        return null;
    }

    /// <summary>Backend.AI's agent does nothing here either (BA25 server.py shutdown_agent is a TODO).</summary>
    private static Task<object?> ShutdownAgentAsync(RpcCall call, CancellationToken cancellationToken) => NoResult;
}
