using System.IO.Compression;
using System.Runtime.InteropServices;
using KataAgent.BackendAi.Serialization;
using Microsoft.Extensions.Logging;

namespace KataAgent.BackendAi.Events;

/// <summary>
/// The agent's reports to the manager: <c>agent_started("self-started")</c>, then <c>agent_heartbeat(AgentInfo)</c>
/// every <see cref="AgentHeartbeatOptions.HeartbeatInterval"/> and <c>agent_status_heartbeat</c> every
/// <see cref="AgentHeartbeatOptions.StatusHeartbeatInterval"/>, and <c>agent_terminated("shutdown")</c> on stop.
/// A heartbeat that cannot be built is logged and the next one tried (as the Python agent does).
/// </summary>
public sealed class AgentHeartbeat : IAsyncDisposable
{
    private readonly AgentHeartbeatOptions _options;
    private readonly IAgentFacts _facts;
    private readonly IEventProducer _events;
    private readonly IBackendAiCodec _codec;
    private readonly ILogger _logger;
    private CancellationTokenSource? _stop;
    private Task? _heartbeats;
    private Task? _statusHeartbeats;

    public AgentHeartbeat(AgentHeartbeatOptions options, IAgentFacts facts, IEventProducer events, IBackendAiCodec codec, ILogger logger)
    {
        ArgumentException.ThrowIfNullOrEmpty(options.AgentId);
        ArgumentException.ThrowIfNullOrEmpty(options.RpcAddress);
        if (options.HeartbeatInterval <= TimeSpan.Zero || options.StatusHeartbeatInterval <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(options), "heartbeat intervals must be positive");
        _options = options;
        _facts = facts;
        _events = events;
        _codec = codec;
        _logger = logger;
    }

    /// <summary>Sends agent_started and starts both heartbeat loops (the first heartbeat goes out at once).</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (_stop is not null)
            throw new InvalidOperationException("the heartbeat is already running");
        await _events.ProduceAsync("agent_started", ["self-started"], cancellationToken).ConfigureAwait(false);
        _stop = new CancellationTokenSource();
        var token = _stop.Token;
        _heartbeats = Task.Run(() => LoopAsync(_options.HeartbeatInterval, SendHeartbeatAsync, token), CancellationToken.None);
        _statusHeartbeats = Task.Run(() => LoopAsync(_options.StatusHeartbeatInterval, SendStatusHeartbeatAsync, token), CancellationToken.None);
    }

    /// <summary>Stops the loops and sends agent_terminated("shutdown").</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_stop is null)
            return;
        await _stop.CancelAsync().ConfigureAwait(false);
        await _heartbeats!.ConfigureAwait(false);
        await _statusHeartbeats!.ConfigureAwait(false);
        _stop.Dispose();
        _stop = null;
        await _events.ProduceAsync("agent_terminated", ["shutdown"], cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);

    private async Task LoopAsync(TimeSpan interval, Func<CancellationToken, Task> send, CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(interval);
        try
        {
            do
            {
                try
                {
                    await send(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
                {
                    _logger.LogError(e, "heartbeat failed; trying again in {Interval}", interval);
                }
            }
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    public async Task SendHeartbeatAsync(CancellationToken cancellationToken)
    {
        var info = await BuildAgentInfoAsync(cancellationToken).ConfigureAwait(false);
        await _events.ProduceAsync("agent_heartbeat", [info], cancellationToken).ConfigureAwait(false);
    }

    public async Task SendStatusHeartbeatAsync(CancellationToken cancellationToken) =>
        await _events.ProduceAsync("agent_status_heartbeat", BuildStatusHeartbeatArgs(), cancellationToken).ConfigureAwait(false);

    /// <summary>
    /// AgentInfo.model_dump() as BA25's manager validates it (common/data/agent/types.py): every field present,
    /// available_resource_slots a ResourceSlot of Decimal, images zlib'd msgpack of [canonical, digest] pairs.
    /// </summary>
    public async Task<Dictionary<object, object?>> BuildAgentInfoAsync(CancellationToken cancellationToken)
    {
        var slots = _facts.Slots;
        var images = await _facts.ListImagesAsync(cancellationToken).ConfigureAwait(false);
        var host = HostOf(_options.RpcAddress);
        var available = new ResourceSlot();
        var units = new Dictionary<object, object?>();
        var plugins = new Dictionary<object, object?>();
        foreach (var slot in slots)
        {
            available[slot.Name] = slot.Amount;
            // A plain string: the manager's pydantic turns it into SlotTypes (the Python agent sends the pickled enum).
            units[slot.Name] = slot.Unit;
            var device = slot.Name.Split('.')[0];
            if (!plugins.ContainsKey(device))
                plugins[device] = new Dictionary<object, object?> { ["version"] = _options.Version };
        }
        return new Dictionary<object, object?>
        {
            ["ip"] = host,
            ["region"] = _options.Region,
            ["scaling_group"] = _options.ScalingGroup,
            ["addr"] = $"tcp://{_options.RpcAddress}",
            ["public_key"] = _options.PublicKey,
            ["public_host"] = _options.PublicHost ?? host,
            ["available_resource_slots"] = available,
            ["slot_key_and_units"] = units,
            ["version"] = _options.Version,
            ["compute_plugins"] = plugins,
            ["images"] = PackImages(images),
            ["architecture"] = _options.Architecture ?? HostArchitecture(),
            ["auto_terminate_abusing_kernel"] = _options.AutoTerminateAbusingKernel,
            ["images_opts"] = new Dictionary<object, object?> { ["compression"] = "zlib" },
        };
    }

    /// <summary>(agent_id, [{container_id, kernel_id, status}], [(kernel_id, container_id)]) for active containers.</summary>
    public IReadOnlyList<object?> BuildStatusHeartbeatArgs()
    {
        var containers = _facts.Containers;
        var active = containers
            .Where(c => c.Status is "running" or "restarting" or "paused")
            .Select(c => (object?)new Dictionary<object, object?>
            {
                ["container_id"] = c.ContainerId,
                ["kernel_id"] = c.KernelId.ToString("D"),
                ["status"] = c.Status,
            })
            .ToArray();
        var kernels = containers.Select(c => (object?)new object?[] { c.KernelId.ToString("D"), c.ContainerId }).ToArray();
        return [_options.AgentId, active, kernels];
    }

    private byte[] PackImages(IReadOnlyList<AgentImage> images)
    {
        var pairs = images.Select(i => (object?)new object?[] { i.Canonical, i.Digest }).ToArray();
        var packed = _codec.Pack(pairs);
        using var output = new MemoryStream();
        using (var zlib = new ZLibStream(output, CompressionLevel.Optimal, leaveOpen: true))
            zlib.Write(packed);
        return output.ToArray();
    }

    private static string HostOf(string hostPort)
    {
        var colon = hostPort.LastIndexOf(':');
        var host = colon > 0 ? hostPort[..colon] : hostPort;
        return host.Trim('[', ']');
    }

    /// <summary>Python's platform.machine() spelled as Backend.AI does (x86_64, aarch64).</summary>
    public static string HostArchitecture() => RuntimeInformation.OSArchitecture switch
    {
        Architecture.X64 => "x86_64",
        Architecture.Arm64 => "aarch64",
        Architecture.X86 => "x86",
        var other => other.ToString().ToLowerInvariant(),
    };
}
