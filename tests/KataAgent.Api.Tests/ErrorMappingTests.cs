using Grpc.Core;
using KataAgent.Api.Server;
using KataAgent.Core.Resources;
using KataAgent.Core.Scratch;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;

namespace KataAgent.Api.Tests;

public sealed class ErrorMappingTests
{
    public static TheoryData<Exception, StatusCode> Cases => new()
    {
        { new SessionRequestException("bad"), StatusCode.InvalidArgument },
        { new SessionNotFoundException("k"), StatusCode.NotFound },
        { new SessionEndedException(new SessionTombstone(new SessionRecord
            {
                KernelId = "k", SessionId = "s", ContainerId = "k", Image = "i", RuntimeClass = "runc", Cpus = 1, MemoryBytes = 1L << 30, ShmBytes = 0,
            }, SessionEndReason.OomKilled(1L << 30, DateTimeOffset.UtcNow), 137, true)), StatusCode.NotFound },
        { new InsufficientResourcesException("full"), StatusCode.ResourceExhausted },
        { new RunInProgressException("busy"), StatusCode.FailedPrecondition },
        { new NoActiveRunException("none"), StatusCode.FailedPrecondition },
        { new RunQueueFullException("full"), StatusCode.ResourceExhausted },
        { new RunnerUnavailableException("gone"), StatusCode.Unavailable },
        { new ScratchPathException("a", ScratchPathError.NotFound, "missing"), StatusCode.NotFound },
        { new ScratchPathException("a", ScratchPathError.IsSymlink, "link"), StatusCode.PermissionDenied },
        { new ScratchPathException("a", ScratchPathError.EscapesWorkDir, "out"), StatusCode.PermissionDenied },
        { new ScratchPathException("a", ScratchPathError.InvalidPath, "bad"), StatusCode.InvalidArgument },
        { new ScratchPathException("a", ScratchPathError.TooLarge, "big"), StatusCode.ResourceExhausted },
        { new SessionCreateException("k", "resources", new InsufficientResourcesException("full")), StatusCode.ResourceExhausted },
        { new SessionCreateException("k", "container", new IOException("disk")), StatusCode.Internal },
        { new TimeoutException("slow"), StatusCode.DeadlineExceeded },
        { new InvalidOperationException("oops"), StatusCode.Internal },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Maps_core_exceptions_to_status_codes(Exception exception, StatusCode expected)
    {
        var rpc = ErrorMapping.ToRpcException(exception);
        Assert.Equal(expected, rpc.StatusCode);
        Assert.False(string.IsNullOrEmpty(rpc.Status.Detail));
    }
}
