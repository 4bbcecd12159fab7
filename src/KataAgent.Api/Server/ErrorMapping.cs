using Grpc.Core;
using Grpc.Core.Interceptors;
using KataAgent.Containerd;
using KataAgent.Core.Resources;
using KataAgent.Core.Scratch;
using KataAgent.Core.Sessions;
using KataAgent.Images;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging;

namespace KataAgent.Api.Server;

/// <summary>Maps the core's exceptions to gRPC status codes with a message a person can act on.</summary>
public static class ErrorMapping
{
    public static RpcException ToRpcException(Exception e) => e switch
    {
        RpcException rpc => rpc,
        _ => new RpcException(new Status(CodeFor(e), MessageFor(e))),
    };

    public static StatusCode CodeFor(Exception e) => e switch
    {
        SessionRequestException => StatusCode.InvalidArgument,
        SessionNotFoundException => StatusCode.NotFound,
        Core.Runs.RunNotFoundException => StatusCode.NotFound,
        // Gone like an unknown one, but the message says how it ended ("session X ended 3 min ago: oom-killed ...").
        SessionEndedException => StatusCode.NotFound,
        // The run was waiting when its session ended: the message names how ("session X ended during run R: oom-killed ...").
        SessionEndedDuringRunException => StatusCode.Aborted,
        // A create step failed: the cause decides (no image → not found, no room → exhausted, ...).
        SessionCreateException { InnerException: { } inner } => CodeFor(inner) is var c && c != StatusCode.Internal ? c : StatusCode.Internal,
        AggregateException { InnerExceptions.Count: > 0 } agg => CodeFor(agg.InnerExceptions[0]),
        InsufficientResourcesException => StatusCode.ResourceExhausted,
        RunInProgressException or NoActiveRunException => StatusCode.FailedPrecondition,
        RunQueueFullException => StatusCode.ResourceExhausted,
        RunnerUnavailableException => StatusCode.Unavailable,
        ScratchPathException s => s.Error switch
        {
            ScratchPathError.NotFound => StatusCode.NotFound,
            ScratchPathError.AlreadyExists => StatusCode.AlreadyExists,
            ScratchPathError.IsSymlink or ScratchPathError.EscapesWorkDir or ScratchPathError.HardLinked or ScratchPathError.MountPoint => StatusCode.PermissionDenied,
            ScratchPathError.TooLarge => StatusCode.ResourceExhausted,
            ScratchPathError.Raced => StatusCode.Aborted,
            ScratchPathError.IoError => StatusCode.Internal,
            _ => StatusCode.InvalidArgument,
        },
        ContainerdNotFoundException => StatusCode.NotFound,
        ContainerdAlreadyExistsException => StatusCode.AlreadyExists,
        ContainerdUnavailableException => StatusCode.Unavailable,
        ContainerdFailedPreconditionException => StatusCode.FailedPrecondition,
        ImageArchiveException or ImageImportException or ExpansionLimitException => StatusCode.InvalidArgument,
        ImageNameTakenException => StatusCode.AlreadyExists,
        Core.Commit.ImageExistsException => StatusCode.AlreadyExists,
        Core.Commit.CommitInProgressException => StatusCode.FailedPrecondition,
        SessionPausedException => StatusCode.FailedPrecondition,
        Core.Commands.CommandNotFoundException => StatusCode.NotFound,
        CommandRejectedException => StatusCode.InvalidArgument,
        Images.Registry.RegistryNotFoundException => StatusCode.NotFound,
        Images.Registry.RegistryAuthenticationException => StatusCode.PermissionDenied,
        Images.Registry.RegistryUnavailableException => StatusCode.Unavailable,
        ArgumentException or FormatException => StatusCode.InvalidArgument,
        TimeoutException => StatusCode.DeadlineExceeded,
        OperationCanceledException => StatusCode.Cancelled,
        _ => StatusCode.Internal,
    };

    private static string MessageFor(Exception e) => e switch
    {
        SessionNotFoundException nf => $"no session '{nf.KernelId}' on this agent (list them with: kata-agent session ls)",
        ContainerdNotFoundException cn when cn.Operation.Contains("image", StringComparison.OrdinalIgnoreCase) =>
            $"{cn.Detail}: import it (kata-agent image import) or build the base image (kata-agent image build-base)",
        AggregateException { InnerExceptions.Count: > 0 } agg => agg.Message,
        _ => e.Message,
    };
}

/// <summary>Catches whatever a handler throws (unary and streaming) and turns it into a proper status.</summary>
public sealed class ErrorMappingInterceptor(ILogger<ErrorMappingInterceptor> logger) : Interceptor
{
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(request, context);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw Map(e, context);
        }
    }

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(requestStream, context);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw Map(e, context);
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(request, responseStream, context);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw Map(e, context);
        }
    }

    // RunCommand is the one bidirectional call: without this its errors reached clients as "Exception was thrown by handler".
    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(requestStream, responseStream, context);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw Map(e, context);
        }
    }

    private RpcException Map(Exception e, ServerCallContext context)
    {
        var code = ErrorMapping.CodeFor(e);
        if (code == StatusCode.Internal)
            logger.LogError(e, "{Method} failed", context.Method);
        else
            logger.LogInformation("{Method}: {Code}: {Message}", context.Method, code, e.Message);
        ApiMetrics.Errors.WithLabels(code.ToString()).Inc();
        return ErrorMapping.ToRpcException(e);
    }
}
