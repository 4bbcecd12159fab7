using KataAgent.Core;
using Prometheus;

namespace KataAgent.Api.Server;

/// <summary>Warm-pool metrics, read from the pools at scrape time (docs/POOL.md).</summary>
public static class PoolMetrics
{
    private static readonly string[] PoolLabel = ["pool"];

    public static readonly Gauge Idle = Metrics.CreateGauge("kata_agent_pool_idle", "Idle members per warm pool.", PoolLabel);
    public static readonly Gauge Filling = Metrics.CreateGauge("kata_agent_pool_filling", "Members being made per warm pool.", PoolLabel);
    public static readonly Gauge Claims = Metrics.CreateGauge("kata_agent_pool_claims", "Creates served by a claimed member since start.", PoolLabel);
    public static readonly Gauge Misses = Metrics.CreateGauge("kata_agent_pool_misses", "Creates that matched a pool with no idle member since start.", PoolLabel);
    public static readonly Gauge Evictions = Metrics.CreateGauge("kata_agent_pool_evictions", "Idle members destroyed to make room for a cold create.", PoolLabel);
    public static readonly Gauge RefillSeconds = Metrics.CreateGauge("kata_agent_pool_refill_seconds", "Mean time to make a member.", PoolLabel);

    public static void Track(Agent agent)
    {
        ArgumentNullException.ThrowIfNull(agent);
        Metrics.DefaultRegistry.AddBeforeCollectCallback(() =>
        {
            foreach (var pool in agent.Pools)
            {
                Idle.WithLabels(pool.Key).Set(pool.Idle);
                Filling.WithLabels(pool.Key).Set(pool.Filling);
                Claims.WithLabels(pool.Key).Set(pool.Claims);
                Misses.WithLabels(pool.Key).Set(pool.Misses);
                Evictions.WithLabels(pool.Key).Set(pool.Evictions);
                RefillSeconds.WithLabels(pool.Key).Set(pool.MeanRefill?.TotalSeconds ?? 0);
            }
        });
    }
}
