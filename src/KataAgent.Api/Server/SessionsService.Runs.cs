using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using KataAgent.Api.V1;
using KataAgent.Core.Runs;

namespace KataAgent.Api.Server;

// Durable runs: attach to a run and follow it, list a session's runs (docs/DURABLE-RUNS.md).
public sealed partial class SessionsService
{
    public override async Task AttachRun(AttachRunRequest request, IServerStreamWriter<AttachRunReply> responseStream, ServerCallContext context)
    {
        var kernelId = RequireKernelId(request.KernelId);
        if (request.FromSeq < 0)
            throw new ArgumentException($"from_seq must be 0 or more (got {request.FromSeq})");
        // Resolved here (as the agent would) so that every reply names the run.
        var runs = agent.ListRuns(kernelId);
        var runId = !string.IsNullOrEmpty(request.RunId) ? request.RunId
            : (runs.LastOrDefault(run => run.State != RunSummary.Ended) ?? (runs.Count > 0 ? runs[^1] : null))?.RunId
              ?? throw new RunNotFoundException($"session {kernelId} has no runs to attach to");
        await foreach (var entry in agent.AttachRunAsync(kernelId, runId, request.FromSeq, context.CancellationToken))
        {
            await responseStream.WriteAsync(new AttachRunReply
            {
                Seq = entry.Seq,
                RunId = runId,
                Event = Mapping.ToProto(entry.Event),
            }, context.CancellationToken);
        }
    }

    public override Task<ListRunsReply> ListRuns(SessionRef request, ServerCallContext context)
    {
        var reply = new ListRunsReply();
        foreach (var run in agent.ListRuns(RequireKernelId(request.KernelId)))
        {
            var info = new RunInfo
            {
                RunId = run.RunId,
                State = run.State,
                FirstKeptSeq = run.FirstKeptSeq,
                NextSeq = run.NextSeq,
                StartedAt = Timestamp.FromDateTimeOffset(run.StartedAt),
            };
            if (run.EndedAt is { } ended)
                info.EndedAt = Timestamp.FromDateTimeOffset(ended);
            if (run.Result is { } result)
                info.Result = Mapping.ToProto(result);
            reply.Runs.Add(info);
        }
        return Task.FromResult(reply);
    }
}
