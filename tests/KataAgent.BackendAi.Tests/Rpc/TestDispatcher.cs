using System.Collections.Concurrent;
using KataAgent.BackendAi.Rpc;

namespace KataAgent.BackendAi.Tests.Rpc;

/// <summary>Methods for the RPC server tests; what the handlers saw is observable to the test.</summary>
internal sealed class TestDispatcher : IRpcDispatcher
{
    private readonly Dictionary<string, RpcHandler> _handlers;

    public TestDispatcher()
    {
        _handlers = new Dictionary<string, RpcHandler>(StringComparer.Ordinal)
        {
            ["ping"] = (call, _) => Task.FromResult(call.Args[0]),
            ["echo"] = (call, _) => Task.FromResult(call.Args.Count == 1 ? call.Args[0] : (object?)call.Args.ToArray()),
            ["echo_kwargs"] = (call, _) =>
                Task.FromResult<object?>(call.Kwargs.ToDictionary(pair => (object)pair.Key, pair => pair.Value)),
            ["slow"] = SlowAsync,
            ["gate"] = GateAsync,
            ["fail"] = (_, _) => throw new BackendAiRpcException("FileNotFoundError", "no such file: x"),
            ["fail_dotnet"] = async (_, ct) =>
            {
                await Task.Yield();
                throw new InvalidOperationException("it's broken");
            },
        };
    }

    public TaskCompletionSource SlowStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public TaskCompletionSource SlowSawCancellation { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ConcurrentDictionary<string, TaskCompletionSource> GateStarted { get; } = new();

    public ConcurrentDictionary<string, TaskCompletionSource> Gates { get; } = new();

    public bool TryGetHandler(string method, out RpcHandler handler) => _handlers.TryGetValue(method, out handler!);

    public void Open(string gate) => Gate(Gates, gate).TrySetResult();

    public Task Started(string gate) => Gate(GateStarted, gate).Task;

    private async Task<object?> SlowAsync(RpcCall call, CancellationToken cancellationToken)
    {
        SlowStarted.TrySetResult();
        try
        {
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            SlowSawCancellation.TrySetResult();
            throw;
        }
        return "slow done";
    }

    private async Task<object?> GateAsync(RpcCall call, CancellationToken cancellationToken)
    {
        string name = (string)call.Args[0]!;
        Gate(GateStarted, name).TrySetResult();
        await Gate(Gates, name).Task.WaitAsync(cancellationToken);
        return name;
    }

    private static TaskCompletionSource Gate(ConcurrentDictionary<string, TaskCompletionSource> gates, string name) =>
        gates.GetOrAdd(name, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
}
