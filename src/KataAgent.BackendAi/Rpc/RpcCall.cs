namespace KataAgent.BackendAi.Rpc;

/// <summary>One decoded manager call: <c>{"args": [...], "kwargs": {...}}</c> for method <see cref="Method"/>.</summary>
public sealed record RpcCall(string Method, IReadOnlyList<object?> Args, IReadOnlyDictionary<string, object?> Kwargs);

/// <summary>Serves one method; the return value is packed as the RESULT body. Throwing answers FAILURE.</summary>
public delegate Task<object?> RpcHandler(RpcCall call, CancellationToken cancellationToken);

/// <summary>The methods the RPC server serves (the Backend.AI agent's RPC functions).</summary>
public interface IRpcDispatcher
{
    bool TryGetHandler(string method, out RpcHandler handler);
}

/// <summary>
/// A handler's failure as the manager shows it: Python-style exception class name and repr
/// (e.g. <c>("FileNotFoundError", "FileNotFoundError('no such file: x')")</c>). Other exceptions are named after their .NET type.
/// </summary>
public class BackendAiRpcException(string pythonName, string message, Exception? inner = null) : Exception(message, inner)
{
    public string PythonName { get; } = pythonName;
}
