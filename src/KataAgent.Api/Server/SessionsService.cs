using System.Diagnostics;
using Google.Protobuf;
using Grpc.Core;
using KataAgent.Api.V1;
using KataAgent.Core.Scratch;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging;
using Agent = KataAgent.Core.Agent;

namespace KataAgent.Api.Server;

/// <summary>The Sessions service: thin over <see cref="Agent"/>; errors are mapped by <see cref="ErrorMappingInterceptor"/>.</summary>
public sealed partial class SessionsService(Agent agent, ILogger<SessionsService> logger) : Sessions.SessionsBase
{
    private const int ChunkSize = 64 * 1024;

    public override async Task CreateSession(CreateSessionRequest request, IServerStreamWriter<CreateSessionReply> responseStream, ServerCallContext context)
    {
        var coreRequest = Mapping.FromProto(request);
        var started = Stopwatch.GetTimestamp();
        // Progress arrives on the create pipeline's thread; the stream takes one writer at a time.
        var progress = new CreateSessionProgress(responseStream);
        var runtimeClass = coreRequest.RuntimeClass ?? agent.RuntimeClasses.DefaultClass;
        try
        {
            var session = await agent.CreateSessionAsync(coreRequest, progress, context.CancellationToken);
            await progress.FlushAsync();
            ApiMetrics.CreateSeconds.WithLabels(runtimeClass, "ok").Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
            using (logger.BeginScope(new Dictionary<string, object> { ["KernelId"] = session.KernelId }))
                logger.LogInformation("session {KernelId} created ({RuntimeClass}, {Image})", session.KernelId, session.Record.RuntimeClass, session.Record.Image);
            await responseStream.WriteAsync(new CreateSessionReply
            {
                Session = Mapping.ToProto(session),
                Path = session.CreatePath == Core.CreatePath.Pooled ? "pooled" : "cold",
            }, context.CancellationToken);
        }
        catch
        {
            ApiMetrics.CreateSeconds.WithLabels(runtimeClass, "error").Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
            throw;
        }
    }

    public override Task<ListSessionsReply> ListSessions(ListSessionsRequest request, ServerCallContext context)
    {
        var reply = new ListSessionsReply();
        reply.Sessions.AddRange(agent.Sessions.Select(Mapping.ToProto));
        if (request.IncludeEnded)
            reply.Sessions.AddRange(agent.EndedSessions.Where(t => agent.FindEndedSession(t.KernelId) is not null).Select(Mapping.ToProto));
        return Task.FromResult(reply);
    }

    /// <summary>A live session, or one that ended within the retention (with its end reason).</summary>
    public override Task<SessionInfo> GetSession(SessionRef request, ServerCallContext context)
    {
        var kernelId = RequireKernelId(request.KernelId);
        return Task.FromResult(agent.FindEndedSession(kernelId) is { } ended ? Mapping.ToProto(ended) : Mapping.ToProto(agent.GetSession(kernelId)));
    }

    public override async Task<DestroySessionReply> DestroySession(DestroySessionRequest request, ServerCallContext context)
    {
        var kernelId = RequireKernelId(request.KernelId);
        var existed = agent.Sessions.Any(s => s.KernelId == kernelId);
        var started = Stopwatch.GetTimestamp();
        await agent.DestroySessionAsync(kernelId, request.KeepScratch, DestroyedBy.Api, context.CancellationToken);
        ApiMetrics.DestroySeconds.Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
        using (logger.BeginScope(new Dictionary<string, object> { ["KernelId"] = kernelId }))
            logger.LogInformation("session {KernelId} destroyed", kernelId);
        return new DestroySessionReply { Existed = existed };
    }

    public override Task Execute(ExecuteRequest request, IServerStreamWriter<ExecuteReply> responseStream, ServerCallContext context)
    {
        var mode = Mapping.FromProto(request.Mode);
        var options = new ExecutionOptions
        {
            ExecTimeout = request.ExecTimeoutSeconds > 0 ? TimeSpan.FromSeconds(request.ExecTimeoutSeconds) : null,
            StreamingFlushTimeout = request.HasFlushTimeoutSeconds ? FlushTimeout(request.FlushTimeoutSeconds) : null,
            Clean = request.Clean,
            Build = request.Build,
            Exec = request.Exec,
        };
        return StreamRunAsync(request.KernelId, request.RunId, mode, request.Text, options, responseStream, context);
    }

    private static TimeSpan FlushTimeout(double seconds) =>
        double.IsFinite(seconds) && seconds >= 0 && seconds <= TimeSpan.FromDays(1).TotalSeconds
            ? TimeSpan.FromSeconds(seconds)
            : throw new ArgumentException($"flush_timeout_seconds must be between 0 and 86400 (got {seconds})");

    public override Task SendInput(SendInputRequest request, IServerStreamWriter<ExecuteReply> responseStream, ServerCallContext context) =>
        StreamRunAsync(request.KernelId, request.RunId, Runner.Protocol.ExecutionMode.Input, request.Text, new ExecutionOptions(), responseStream, context);

    private async Task StreamRunAsync(string kernelId, string runId, Runner.Protocol.ExecutionMode mode, string text, ExecutionOptions options,
        IServerStreamWriter<ExecuteReply> responseStream, ServerCallContext context)
    {
        RequireKernelId(kernelId);
        if (string.IsNullOrEmpty(runId))
            throw new ArgumentException("run_id is required (any string naming this run; reuse it for input and continue)");
        var session = agent.GetSession(kernelId);
        // Nothing answers in a session whose process is gone: say so instead of waiting for output forever.
        if (session.State == SessionState.Paused)
            throw new SessionPausedException(kernelId);
        if (session.State is not SessionState.Running)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition, session.State == SessionState.Exited
                ? $"session {kernelId} has exited ({session.EndReason?.Describe() ?? $"exit code {session.ExitCode}"}): " +
                  $"restart it (kata-agent session restart {kernelId}) or remove it (kata-agent session rm {kernelId})"
                : $"session {kernelId} is {Mapping.StateName(session.State)}"));
        }
        ApiMetrics.Executions.WithLabels(mode.ToString().ToLowerInvariant()).Inc();
        // A caller that goes away only stops collecting: the run goes on and keeps its output for a continue.
        await foreach (var e in agent.ExecuteAsync(kernelId, runId, mode, text, options, context.CancellationToken))
            await responseStream.WriteAsync(Mapping.ToProto(e), context.CancellationToken);
    }

    public override async Task<InterruptReply> Interrupt(SessionRef request, ServerCallContext context)
    {
        await agent.InterruptAsync(RequireKernelId(request.KernelId), context.CancellationToken);
        return new InterruptReply();
    }

    public override async Task<CompleteReply> Complete(CompleteRequest request, ServerCallContext context)
    {
        var session = agent.GetSession(RequireKernelId(request.KernelId));
        var suggestions = await session.Runner.CompleteAsync(new CompletionRequest
        {
            Code = request.Code,
            Row = request.HasRow ? request.Row : null,
            Column = request.HasCol ? request.Col : null,
            Line = request.HasLine ? request.Line : null,
            Post = request.HasPost ? request.Post : null,
        }, context.CancellationToken);
        var reply = new CompleteReply();
        reply.Suggestions.AddRange(suggestions);
        return reply;
    }

    public override async Task<UploadReply> Upload(IAsyncStreamReader<UploadRequest> requestStream, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        if (!await requestStream.MoveNext(ct) || requestStream.Current.KindCase != UploadRequest.KindOneofCase.Header)
            throw new ArgumentException("the first upload message must be the header (kernel id and path)");
        var header = requestStream.Current.Header;
        var files = agent.Files(RequireKernelId(header.KernelId));
        await using var content = new ChunkStream<UploadRequest>(requestStream, m => m.KindCase == UploadRequest.KindOneofCase.Chunk ? m.Chunk : null, ct);
        var written = await files.UploadAsync(header.Path, content, agent.Options.UploadMaxBytes, header.CreateParents, ct);
        return new UploadReply { BytesWritten = written };
    }

    public override async Task Download(DownloadRequest request, IServerStreamWriter<DownloadReply> responseStream, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        var files = agent.Files(RequireKernelId(request.KernelId));
        Stream? file = null;
        try
        {
            file = await files.OpenDownloadAsync(request.Path, agent.Options.DownloadMaxBytes, ct);
        }
        catch (ScratchPathException e) when (e.Error == ScratchPathError.IsDirectory)
        {
            // A directory (or the work dir itself) goes as a tar of its contents.
        }
        if (file is not null)
        {
            await using (file)
            {
                await responseStream.WriteAsync(new DownloadReply { Header = new DownloadHeader { IsTar = false, Size = file.Length } }, ct);
                var buffer = new byte[ChunkSize];
                int n;
                while ((n = await file.ReadAsync(buffer, ct)) > 0)
                    await responseStream.WriteAsync(new DownloadReply { Chunk = ByteString.CopyFrom(buffer, 0, n) }, ct);
            }
            return;
        }
        await responseStream.WriteAsync(new DownloadReply { Header = new DownloadHeader { IsTar = true, Size = -1 } }, ct);
        await using var output = new ChunkWriterStream(chunk => responseStream.WriteAsync(new DownloadReply { Chunk = chunk }, ct), ChunkSize);
        await files.DownloadDirectoryAsTarAsync(request.Path, output, agent.Options.DownloadMaxBytes, ct);
        await output.FlushAsync(ct);
    }

    public override async Task<ListFilesReply> ListFiles(ListFilesRequest request, ServerCallContext context)
    {
        var entries = await agent.Files(RequireKernelId(request.KernelId)).ListAsync(request.Path, context.CancellationToken);
        var reply = new ListFilesReply { Truncated = entries.Truncated, Limit = entries.Limit };
        reply.Entries.AddRange(entries.Select(Mapping.ToProto));
        return reply;
    }

    public override async Task<StartServiceReply> StartService(StartServiceRequest request, ServerCallContext context)
    {
        var session = agent.GetSession(RequireKernelId(request.KernelId));
        if (string.IsNullOrWhiteSpace(request.Name))
            throw new ArgumentException("a service needs a name (the app to start, e.g. jupyter or ttyd)");
        // No command: the runner resolves the name, as with Backend.AI's agent; a command is our extension.
        var result = await session.Runner.StartServiceAsync(new ServiceDefinition
        {
            Name = request.Name,
            Command = request.Command.Count > 0 ? request.Command.ToList() : null,
            Ports = request.Ports.ToList(),
            Protocol = string.IsNullOrEmpty(request.Protocol) ? "tcp" : request.Protocol,
            Arguments = request.Arguments.Count > 0
                ? request.Arguments.ToDictionary(a => a.Key, a => (IReadOnlyList<string>)a.Value.Values.ToList(), StringComparer.Ordinal)
                : null,
            Envs = request.Envs.Count > 0 ? new Dictionary<string, string>(request.Envs, StringComparer.Ordinal) : null,
            Environment = new Dictionary<string, string>(request.Environment, StringComparer.Ordinal),
            StartTimeoutSeconds = request.StartTimeoutSeconds > 0 ? request.StartTimeoutSeconds : null,
        }, context.CancellationToken);
        return new StartServiceReply { Status = result.Status, Error = result.Error ?? "" };
    }

    public override async Task<StopServiceReply> StopService(StopServiceRequest request, ServerCallContext context)
    {
        var session = agent.GetSession(RequireKernelId(request.KernelId));
        await session.Runner.ShutdownServiceAsync(request.Name, context.CancellationToken);
        return new StopServiceReply();
    }

    public override async Task<GetAppsReply> GetApps(GetAppsRequest request, ServerCallContext context)
    {
        var session = agent.GetSession(RequireKernelId(request.KernelId));
        AppsResult apps;
        try
        {
            apps = await session.Runner.GetAppsAsync(request.Name, context.CancellationToken);
        }
        catch (InvalidDataException e)
        {
            throw new RpcException(new Status(StatusCode.Internal, $"session {request.KernelId}: {e.Message}"));
        }
        return Mapping.ToProto(apps);
    }

    public override async Task<SessionInfo> RestartSession(SessionRef request, ServerCallContext context)
    {
        var session = await agent.RestartSessionAsync(RequireKernelId(request.KernelId), context.CancellationToken);
        logger.LogInformation("session {KernelId} restarted", session.KernelId);
        return Mapping.ToProto(session);
    }

    public override async Task GetLogs(GetLogsRequest request, IServerStreamWriter<LogChunk> responseStream, ServerCallContext context)
    {
        var kernelId = RequireKernelId(request.KernelId);
        if (!request.Follow)
        {
            await responseStream.WriteAsync(new LogChunk { Text = await agent.ReadLogAsync(kernelId, context.CancellationToken) }, context.CancellationToken);
            return;
        }
        try
        {
            await foreach (var text in agent.FollowLogAsync(kernelId, context.CancellationToken))
                await responseStream.WriteAsync(new LogChunk { Text = text }, context.CancellationToken);
        }
        catch (OperationCanceledException) when (context.CancellationToken.IsCancellationRequested)
        {
            // The follower hung up: that is how a follow ends.
        }
    }

    public override async Task<V1.SessionStats> GetStats(SessionRef request, ServerCallContext context)
    {
        var kernelId = RequireKernelId(request.KernelId);
        var stats = Mapping.ToProto(await agent.GetStatsAsync(kernelId, context.CancellationToken));
        stats.State = Mapping.StateName(agent.GetSession(kernelId).State);
        return stats;
    }

    public override async Task<SessionInfo> PauseSession(SessionRef request, ServerCallContext context) =>
        Mapping.ToProto(await agent.PauseSessionAsync(RequireKernelId(request.KernelId), context.CancellationToken));

    public override async Task<SessionInfo> ExtendSession(ExtendSessionRequest request, ServerCallContext context) =>
        Mapping.ToProto(await agent.ExtendSessionAsync(RequireKernelId(request.KernelId),
            request.BySeconds > 0 ? Mapping.Seconds(request.BySeconds, "by_seconds") : throw new SessionRequestException($"by_seconds must be positive (got {request.BySeconds})"),
            context.CancellationToken));

    public override async Task<SessionInfo> ResumeSession(SessionRef request, ServerCallContext context) =>
        Mapping.ToProto(await agent.ResumeSessionAsync(RequireKernelId(request.KernelId), context.CancellationToken));

    public override async Task<CommitSessionReply> CommitSession(CommitSessionRequest request, ServerCallContext context)
    {
        if (string.IsNullOrWhiteSpace(request.ImageName))
            throw new ArgumentException("image_name is required (the name of the new image)");
        var committed = await agent.CommitAsync(RequireKernelId(request.KernelId), request.ImageName, request.Replace, context.CancellationToken);
        logger.LogInformation("session {KernelId} committed as {Image}", request.KernelId, committed.Name);
        return new CommitSessionReply
        {
            Name = committed.Name,
            ManifestDigest = committed.ManifestDigest,
            LayerSize = committed.LayerSize,
            BaseImage = committed.BaseImage,
            PausedSeconds = committed.PausedFor.TotalSeconds,
            ElapsedSeconds = committed.Elapsed.TotalSeconds,
        };
    }

    private static string RequireKernelId(string kernelId) =>
        string.IsNullOrWhiteSpace(kernelId) ? throw new ArgumentException("kernel_id is required") : kernelId;
}
