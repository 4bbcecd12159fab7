using KataAgent.Core;
using Prometheus;

namespace KataAgent.Api.Server;

/// <summary>Prometheus metrics of the API server (scraped from /metrics when enabled).</summary>
public static class ApiMetrics
{
    private static readonly double[] LatencyBuckets = [0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120];

    public static readonly Gauge Sessions = Metrics.CreateGauge("kata_agent_sessions", "Sessions by state and runtime class.",
        new GaugeConfiguration { LabelNames = ["state", "runtime_class"] });

    public static readonly Histogram CreateSeconds = Metrics.CreateHistogram("kata_agent_session_create_seconds", "Session create latency.",
        new HistogramConfiguration { LabelNames = ["runtime_class", "outcome"], Buckets = LatencyBuckets });

    public static readonly Histogram DestroySeconds = Metrics.CreateHistogram("kata_agent_session_destroy_seconds", "Session destroy latency.",
        new HistogramConfiguration { Buckets = LatencyBuckets });

    public static readonly Counter Executions = Metrics.CreateCounter("kata_agent_executions_total", "Execute calls by mode.",
        new CounterConfiguration { LabelNames = ["mode"] });

    public static readonly Counter Errors = Metrics.CreateCounter("kata_agent_api_errors_total", "Failed API calls by gRPC status code.",
        new CounterConfiguration { LabelNames = ["code"] });

    /// <summary>Session gauges are computed at scrape time from the agent's registry, so they never drift.</summary>
    public static void TrackSessions(Agent agent)
    {
        Metrics.DefaultRegistry.AddBeforeCollectCallback(() =>
        {
            foreach (var labels in Sessions.GetAllLabelValues().ToList())
                Sessions.WithLabels(labels).Set(0);
            foreach (var group in agent.Sessions.GroupBy(s => (State: Mapping.StateName(s.State), s.Record.RuntimeClass)))
                Sessions.WithLabels(group.Key.State, group.Key.RuntimeClass).Set(group.Count());
        });
    }
}
