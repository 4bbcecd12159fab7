using System.Collections.Concurrent;
using KataAgent.BackendAi.Rpc;
using KataAgent.Runner.Protocol;
using static KataAgent.BackendAi.Kernels.RpcArgs;

namespace KataAgent.BackendAi.Kernels;

/// <summary>Networks, ports, service apps, commits and the agent's own facts.</summary>
public sealed partial class BackendAiAgentMethods
{
    private readonly ConcurrentDictionary<int, byte> _assignedPorts = new();

    /// <summary>
    /// Multi-container sessions need a network joining their kernels; our sessions are single-container and isolated
    /// from each other, so this is refused rather than pretended.
    /// </summary>
    private static Task<object?> CreateLocalNetworkAsync(RpcCall call, CancellationToken cancellationToken) =>
        throw new BackendAiRpcException("NotImplementedError",
            $"create_local_network('{Text(Get(call, 0, "network_name"), "network_name")}'): this agent runs single-container sessions only");

    private static Task<object?> DestroyLocalNetworkAsync(RpcCall call, CancellationToken cancellationToken) =>
        throw new BackendAiRpcException("NotImplementedError",
            $"destroy_local_network('{Text(Get(call, 0, "network_name"), "network_name")}'): this agent runs single-container sessions only");

    /// <summary>A host port from the agent's session port range, held until release_port.</summary>
    private Task<object?> AssignPortAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var port = _agent.Services.Ports.Allocate(1)[0];
        _assignedPorts.TryAdd(port, 0);
        return Task.FromResult<object?>((long)port);
    }

    private Task<object?> ReleasePortAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var port = (int)(Long(Get(call, 0, "port_no"), "port_no") ?? throw TypeError("port_no", "an integer", null));
        if (!_assignedPorts.TryRemove(port, out _))
            throw new BackendAiRpcException("ValueError", $"port {port} was not assigned by assign_port");
        _agent.Services.Ports.Release([port]);
        return NoResult;
    }

    /// <summary>Starts a service app through the kernel runner; returns its reply ({status, error}).</summary>
    private async Task<object?> StartServiceAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var kernelId = Id(Get(call, 0, "kernel_id"), "kernel_id");
        var service = Text(Get(call, 1, "service"), "service");
        var opts = Get(call, 2, "opts", required: false) is { } o ? Map(o, "opts") : [];
        var session = _agent.GetSession(kernelId);
        var declared = session.Record.ServicePorts.FirstOrDefault(p => p.Name == service);
        IReadOnlyList<int> ports = Field(opts, "port") is { } port
            ? [(int)(Long(port, "opts.port") ?? 0)]
            : declared?.ContainerPorts ?? [];
        var arguments = Field(opts, "arguments") is { } a
            ? Map(a, "opts.arguments").ToDictionary(p => Text(p.Key, "opts.arguments key"),
                p => (IReadOnlyList<string>)(p.Value is object?[] list ? list.Select((v, i) => Text(v, $"opts.arguments[{i}]")).ToList() : [Text(p.Value, "opts.arguments value")]),
                StringComparer.Ordinal)
            : null;
        var envs = Field(opts, "envs") is { } e
            ? Map(e, "opts.envs").ToDictionary(p => Text(p.Key, "opts.envs key"), p => Text(p.Value, "opts.envs value"), StringComparer.Ordinal)
            : null;
        var result = await session.Runner.StartServiceAsync(new ServiceDefinition
        {
            Name = service,
            Ports = ports,
            Protocol = OptionalText(Field(opts, "protocol"), "opts.protocol") ?? declared?.Protocol ?? "tcp",
            Arguments = arguments,
            Envs = envs,
        }, cancellationToken).ConfigureAwait(false);
        return new Dictionary<object, object?> { ["status"] = result.Status, ["error"] = result.Error };
    }

    private async Task<object?> ShutdownServiceAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var kernelId = Id(Get(call, 0, "kernel_id"), "kernel_id");
        var service = Text(Get(call, 1, "service"), "service");
        await _agent.GetSession(kernelId).Runner.ShutdownServiceAsync(service, cancellationToken).ConfigureAwait(false);
        return null;
    }

    /// <summary>Commits the kernel to the image named by <c>canonical</c> in the background; exporting to a file is not offered.</summary>
    private Task<object?> CommitAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var kernelId = Id(Get(call, 0, "kernel_id"), "kernel_id");
        _ = OptionalText(Get(call, 1, "subdir", required: false), "subdir");
        var canonical = OptionalText(Get(call, 2, "canonical", required: false), "canonical");
        var filename = OptionalText(Get(call, 3, "filename", required: false), "filename");
        if (canonical is null)
        {
            throw new BackendAiRpcException("NotImplementedError",
                $"commit of kernel {kernelId} to a file ('{filename}'): this agent commits to an image (pass canonical)");
        }
        _agent.GetSession(kernelId);
        var taskId = Guid.NewGuid().ToString("N");
        RunInBackground(ct => _agent.CommitAsync(kernelId, canonical, replace: false, ct));
        return Task.FromResult<object?>(new Dictionary<object, object?> { ["bgtask_id"] = taskId, ["kernel"] = kernelId, ["path"] = null });
    }

    /// <summary>BA25 CommitStatus values: "ongoing" while a commit runs, else "clean".</summary>
    private Task<object?> GetCommitStatusAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var kernelId = Id(Get(call, 0, "kernel_id"), "kernel_id");
        var status = _agent.GetCommitStatus(kernelId);
        return Task.FromResult<object?>(new Dictionary<object, object?>
        {
            ["kernel"] = kernelId,
            ["status"] = status.IsActive ? "ongoing" : "clean",
        });
    }

    private static Task<object?> PushImageAsync(RpcCall call, CancellationToken cancellationToken) =>
        throw new BackendAiRpcException("NotImplementedError", "push_image: pushing to the manager's registries is not offered by this agent yet");

    /// <summary>The compute devices' health (cpu and mem: the host's).</summary>
    private Task<object?> GatherHwInfoAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var capacity = _agent.Resources.Capacity;
        return Task.FromResult<object?>(new Dictionary<object, object?>
        {
            ["cpu"] = Device(new Dictionary<object, object?> { ["cores"] = (long)Environment.ProcessorCount, ["allocatable"] = capacity.Cpus }),
            ["mem"] = Device(new Dictionary<object, object?> { ["total_bytes"] = capacity.MemoryBytes }),
        });

        static Dictionary<object, object?> Device(Dictionary<object, object?> metadata) => new()
        {
            ["status"] = "healthy",
            ["status_info"] = null,
            ["metadata"] = metadata,
        };
    }

    private Task<object?> GetLocalConfigAsync(RpcCall call, CancellationToken cancellationToken) =>
        Task.FromResult<object?>(new Dictionary<object, object?>
        {
            ["agent"] = new Dictionary<object, object?>
            {
                ["id"] = AgentId,
                ["scaling-group"] = _options.ScalingGroup,
                ["backend"] = "kata-agent",
                ["runtime-class"] = _options.RuntimeClass ?? _agent.Options.DefaultRuntimeClass,
            },
            ["container"] = new Dictionary<object, object?>
            {
                ["scratch-root"] = _agent.Options.ScratchRoot,
                ["port-range"] = new object?[] { (long)_agent.Options.PortRangeStart, (long)_agent.Options.PortRangeEnd },
            },
        });
}
