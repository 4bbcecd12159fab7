using Grpc.Core;
using KataAgent.Api.V1;
using KataAgent.Core.Pool;

namespace KataAgent.Api.Server;

public sealed partial class SessionsService
{
    public override Task<ListPoolsReply> ListPools(ListPoolsRequest request, ServerCallContext context)
    {
        var reply = new ListPoolsReply();
        reply.Pools.AddRange(agent.Pools.Select(ToProto));
        return Task.FromResult(reply);
    }

    internal static PoolInfo ToProto(PoolStatus pool)
    {
        var info = new PoolInfo
        {
            Key = pool.Key,
            Image = pool.Spec.Image,
            RuntimeClass = pool.Spec.RuntimeClass,
            Cpus = pool.Spec.Cpus,
            MemoryBytes = pool.Spec.MemoryBytes,
            Min = pool.Spec.Min,
            Max = pool.Spec.Max,
            TargetIdle = pool.Spec.TargetIdle,
            Idle = pool.Idle,
            Filling = pool.Filling,
            Claims = pool.Claims,
            Misses = pool.Misses,
            Refills = pool.Refills,
            RefillFailures = pool.RefillFailures,
            Evictions = pool.Evictions,
            Discarded = pool.Discarded,
            LastRefillSeconds = pool.LastRefill?.TotalSeconds ?? 0,
            MeanRefillSeconds = pool.MeanRefill?.TotalSeconds ?? 0,
            LastError = pool.LastError ?? "",
        };
        info.IdleMembers.AddRange(pool.IdleMembers);
        return info;
    }
}
