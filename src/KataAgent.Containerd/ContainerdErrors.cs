using Grpc.Core;

namespace KataAgent.Containerd;

/// <summary>A containerd call failed; <see cref="Exception.Message"/> carries containerd's own words.</summary>
public class ContainerdException : Exception
{
    public ContainerdException(string operation, StatusCode code, string detail, Exception? inner = null)
        : base($"containerd {operation}: {detail}", inner)
    {
        Operation = operation;
        Code = code;
        Detail = detail;
    }

    public string Operation { get; }
    public StatusCode Code { get; }
    /// <summary>containerd's message, unprefixed.</summary>
    public string Detail { get; }
}

public sealed class ContainerdNotFoundException(string operation, StatusCode code, string detail, Exception? inner = null)
    : ContainerdException(operation, code, detail, inner);

public sealed class ContainerdAlreadyExistsException(string operation, StatusCode code, string detail, Exception? inner = null)
    : ContainerdException(operation, code, detail, inner);

public sealed class ContainerdUnavailableException(string operation, StatusCode code, string detail, Exception? inner = null)
    : ContainerdException(operation, code, detail, inner);

public sealed class ContainerdFailedPreconditionException(string operation, StatusCode code, string detail, Exception? inner = null)
    : ContainerdException(operation, code, detail, inner);

internal static class Rpc
{
    public static ContainerdException Translate(string operation, RpcException e)
    {
        var detail = string.IsNullOrEmpty(e.Status.Detail) ? e.StatusCode.ToString() : e.Status.Detail;
        return e.StatusCode switch
        {
            StatusCode.NotFound => new ContainerdNotFoundException(operation, e.StatusCode, detail, e),
            StatusCode.AlreadyExists => new ContainerdAlreadyExistsException(operation, e.StatusCode, detail, e),
            StatusCode.Unavailable => new ContainerdUnavailableException(operation, e.StatusCode, detail, e),
            StatusCode.FailedPrecondition => new ContainerdFailedPreconditionException(operation, e.StatusCode, detail, e),
            _ => new ContainerdException(operation, e.StatusCode, detail, e),
        };
    }

    public static async Task<T> Call<T>(string operation, Func<Task<T>> call)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (RpcException e) when (e.StatusCode != StatusCode.Cancelled)
        {
            throw Translate(operation, e);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled)
        {
            throw new OperationCanceledException($"containerd {operation} cancelled", e);
        }
    }

    public static async Task Call(string operation, Func<Task> call)
    {
        await Call<bool>(operation, async () => { await call().ConfigureAwait(false); return true; }).ConfigureAwait(false);
    }

    /// <summary>Drains a server stream, translating errors as they surface.</summary>
    public static async IAsyncEnumerable<T> Stream<T>(string operation, AsyncServerStreamingCall<T> call,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using (call)
        {
            var reader = call.ResponseStream;
            while (true)
            {
                bool hasNext;
                try
                {
                    hasNext = await reader.MoveNext(cancellationToken).ConfigureAwait(false);
                }
                catch (RpcException e) when (e.StatusCode != StatusCode.Cancelled)
                {
                    throw Translate(operation, e);
                }
                catch (RpcException e)
                {
                    throw new OperationCanceledException($"containerd {operation} cancelled", e, cancellationToken);
                }
                if (!hasNext)
                    yield break;
                yield return reader.Current;
            }
        }
    }
}
