using System.Collections.Concurrent;
using KataAgent.BackendAi.Events;
using KataAgent.BackendAi.Rpc;
using KataAgent.Core;
using KataAgent.Core.Mounts;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.BackendAi.Kernels;

/// <summary>
/// The Backend.AI agent's RPC functions (BA25 agent/server.py) served by our agent: the manager's kernels are our
/// sessions (kernel id = our kernel id, session id = our session id). Events go to <see cref="IEventProducer"/> with the
/// positional args Backend.AI's event classes serialize.
/// </summary>
public sealed partial class BackendAiAgentMethods : IRpcDispatcher, IAsyncDisposable
{
    private readonly Agent _agent;
    private readonly IEventProducer _events;
    private readonly BackendAiAgentOptions _options;
    private readonly KernelTerminations _terminations;
    private readonly ILogger _logger;
    private readonly Dictionary<string, RpcHandler> _handlers;
    private readonly ConcurrentDictionary<string, byte> _creating = new();
    private readonly ConcurrentDictionary<string, byte> _pulling = new();
    private readonly ConcurrentDictionary<Task, byte> _background = new();
    private readonly CancellationTokenSource _stop = new();

    public BackendAiAgentMethods(Agent agent, IEventProducer events, BackendAiAgentOptions? options = null,
        KernelTerminations? terminations = null, ILogger? logger = null)
    {
        _agent = agent ?? throw new ArgumentNullException(nameof(agent));
        _events = events ?? throw new ArgumentNullException(nameof(events));
        _options = options ?? new BackendAiAgentOptions();
        _terminations = terminations ?? new KernelTerminations();
        _logger = logger ?? NullLogger.Instance;
        _handlers = new Dictionary<string, RpcHandler>(StringComparer.Ordinal)
        {
            ["ping"] = PingAsync,
            ["check_and_pull"] = CheckAndPullAsync,
            ["create_kernels"] = CreateKernelsAsync,
            ["destroy_kernel"] = DestroyKernelAsync,
            ["execute"] = ExecuteAsync,
            ["get_logs"] = GetLogsAsync,
            ["upload_file"] = UploadFileAsync,
            ["download_file"] = DownloadFileAsync,
            ["download_single"] = DownloadSingleAsync,
            ["list_files"] = ListFilesAsync,
            ["check_pulling"] = CheckPullingAsync,
            ["check_creating"] = CheckCreatingAsync,
            ["trigger_batch_execution"] = TriggerBatchExecutionAsync,
            ["create_local_network"] = CreateLocalNetworkAsync,
            ["destroy_local_network"] = DestroyLocalNetworkAsync,
            ["assign_port"] = AssignPortAsync,
            ["release_port"] = ReleasePortAsync,
            ["interrupt_kernel"] = InterruptKernelAsync,
            ["get_completions"] = GetCompletionsAsync,
            ["start_service"] = StartServiceAsync,
            ["shutdown_service"] = ShutdownServiceAsync,
            ["sync_kernel_registry"] = SyncKernelRegistryAsync,
            ["restart_kernel"] = RestartKernelAsync,
            ["commit"] = CommitAsync,
            ["get_commit_status"] = GetCommitStatusAsync,
            ["push_image"] = PushImageAsync,
            ["gather_hwinfo"] = GatherHwInfoAsync,
            ["get_local_config"] = GetLocalConfigAsync,
            ["reset_agent"] = ResetAgentAsync,
            ["shutdown_agent"] = ShutdownAgentAsync,
        };
    }

    /// <summary>The agent id events carry.</summary>
    public string AgentId => _options.AgentId.Length > 0 ? _options.AgentId : _agent.Options.AgentId;

    /// <summary>The methods served, by name.</summary>
    public IReadOnlyCollection<string> Methods => _handlers.Keys;

    public bool TryGetHandler(string method, out RpcHandler handler)
    {
        if (_handlers.TryGetValue(method, out var inner))
        {
            handler = (call, cancellationToken) => TranslateErrorsAsync(inner, call, cancellationToken);
            return true;
        }
        handler = null!;
        return false;
    }

    /// <summary>Waits for the work the methods started in the background (pulls, batch runs, commits) to end.</summary>
    public async Task WhenIdleAsync()
    {
        while (!_background.IsEmpty)
            await Task.WhenAll(_background.Keys).ConfigureAwait(false);
    }

    /// <summary>Our failures named as the manager expects Python exceptions.</summary>
    private static async Task<object?> TranslateErrorsAsync(RpcHandler handler, RpcCall call, CancellationToken cancellationToken)
    {
        try
        {
            return await handler(call, cancellationToken).ConfigureAwait(false);
        }
        catch (SessionNotFoundException e)
        {
            throw new BackendAiRpcException("KeyError", e.Message, e);
        }
        catch (SessionEndedException e)
        {
            throw new BackendAiRpcException("RuntimeError", e.Message, e);
        }
        catch (Exception e) when (e is SessionRequestException or MountSourceException or SessionPausedException)
        {
            throw new BackendAiRpcException("InvalidArgument", e.Message, e);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new BackendAiRpcException("FileNotFoundError", e.Message, e);
        }
        catch (Exception e) when (e is RunInProgressException or NoActiveRunException or RunQueueFullException or RunnerUnavailableException)
        {
            throw new BackendAiRpcException("RuntimeError", e.Message, e);
        }
        catch (ArgumentException e)
        {
            throw new BackendAiRpcException("ValueError", e.Message, e);
        }
    }

    private void RunInBackground(Func<CancellationToken, Task> work)
    {
        var task = Task.Run(async () =>
        {
            try
            {
                await work(_stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
            }
            catch (Exception e)
            {
                _logger.LogError(e, "background work of a Backend.AI call failed");
            }
        }, CancellationToken.None);
        _background.TryAdd(task, 0);
        _ = task.ContinueWith(t => _background.TryRemove(t, out _), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Sends an event; a failure to send is logged, never the caller's failure (the heartbeat carries the state).</summary>
    private async Task EmitAsync(string name, params object?[] args)
    {
        try
        {
            await _events.ProduceAsync(name, args, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _logger.LogWarning(e, "could not send event {Event}", name);
        }
    }

    private Session? FindLive(string kernelId) => _agent.Sessions.FirstOrDefault(s => s.KernelId == kernelId);

    /// <summary>The sessions the manager created (not those made through the local API on the same agent).</summary>
    private List<Session> ManagerSessions() => _agent.Sessions.Where(s => BackendAiSessionLabels.IsManagers(s.Record)).ToList();

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await WhenIdleAsync().ConfigureAwait(false);
        _stop.Dispose();
    }
}
