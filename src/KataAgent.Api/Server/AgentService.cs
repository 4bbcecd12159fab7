using System.Reflection;
using Grpc.Core;
using KataAgent.Api.V1;
using KataAgent.Containerd;
using Microsoft.Extensions.Hosting;
using CoreAgent = KataAgent.Core.Agent;

namespace KataAgent.Api.Server;

/// <summary>The Agent service: what this agent is and can do, its health, and the lifecycle event feed.</summary>
public sealed class AgentService(CoreAgent agent, IHostApplicationLifetime lifetime) : V1.Agent.AgentBase
{
    public static string Version { get; } =
        (Assembly.GetEntryAssembly() ?? typeof(AgentService).Assembly).GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
            .Split('+')[0] ?? "0.0.0";

    public override async Task<AgentInfo> GetInfo(GetInfoRequest request, ServerCallContext context)
    {
        var containerdVersion = "unreachable";
        try
        {
            containerdVersion = (await agent.Containerd.Version.GetAsync(context.CancellationToken)).Version;
        }
        catch (ContainerdException e)
        {
            containerdVersion = "unreachable: " + e.Detail;
        }
        var info = new AgentInfo
        {
            Version = Version,
            AgentId = agent.Options.AgentId,
            ContainerdVersion = containerdVersion,
            ContainerdAddress = agent.Containerd.Address,
            Namespace = agent.Options.Namespace,
            DefaultRuntimeClass = agent.RuntimeClasses.DefaultClass,
            FallbackWarning = agent.RuntimeClasses.FallbackWarning ?? "",
            Capacity = Slots(agent.Resources.Capacity),
            Used = Slots(agent.Resources.Used),
            Available = Slots(agent.Resources.Available),
            Sessions = agent.Sessions.Count,
            DataDir = agent.Options.DataDir,
        };
        info.RuntimeClasses.AddRange(agent.RuntimeClasses.All.OrderBy(c => c.Class.Name, StringComparer.Ordinal).Select(c => new RuntimeClassInfo
        {
            Name = c.Class.Name,
            RuntimeType = c.Class.RuntimeType,
            Usable = c.Usable,
            Detail = c.Detail,
        }));
        return info;
    }

    public override async Task<HealthReply> Health(HealthRequest request, ServerCallContext context)
    {
        try
        {
            var version = await agent.Containerd.Version.GetAsync(context.CancellationToken);
            return new HealthReply { Status = "serving", Detail = $"containerd {version.Version}" };
        }
        catch (ContainerdException e)
        {
            return new HealthReply { Status = "degraded", Detail = "containerd: " + e.Detail };
        }
    }

    public override async Task WatchEvents(WatchEventsRequest request, IServerStreamWriter<V1.SessionEvent> responseStream, ServerCallContext context)
    {
        // An endless stream: it ends when the server shuts down, so that graceful shutdown is not held up by it.
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, lifetime.ApplicationStopping);
        using var subscription = agent.Subscribe();
        try
        {
            // The headers go out once the subscription stands: a client that awaits them misses no event published after.
            await context.WriteResponseHeadersAsync(new Metadata());
            await foreach (var e in subscription.ReadAllAsync(linked.Token))
                await responseStream.WriteAsync(Mapping.ToProto(e), linked.Token);
        }
        catch (OperationCanceledException) when (lifetime.ApplicationStopping.IsCancellationRequested)
        {
        }
    }

    private static ResourceSlots Slots(Core.Resources.ResourceSlots slots) => new() { Cpus = slots.Cpus, MemoryBytes = slots.MemoryBytes };
}
