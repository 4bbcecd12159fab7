using KataAgent.BackendAi.Rpc;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using static KataAgent.BackendAi.Kernels.RpcArgs;

namespace KataAgent.BackendAi.Kernels;

/// <summary>execute, trigger_batch_execution, interrupt_kernel, get_completions.</summary>
public sealed partial class BackendAiAgentMethods
{
    private async Task<object?> ExecuteAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var sessionId = Id(Get(call, 0, "session_id"), "session_id");
        var kernelId = Id(Get(call, 1, "kernel_id"), "kernel_id");
        var apiVersion = Long(Get(call, 2, "api_version"), "api_version") ?? 4;
        var runId = OptionalText(Get(call, 3, "run_id"), "run_id") ?? Guid.NewGuid().ToString("N");
        var mode = ModeOf(Text(Get(call, 4, "mode"), "mode"));
        var code = OptionalText(Get(call, 5, "code"), "code") ?? "";
        var opts = Get(call, 6, "opts", required: false) is { } o ? Map(o, "opts") : [];
        var flushTimeout = Double(Get(call, 7, "flush_timeout", required: false), "flush_timeout");
        await EmitAsync("execution_started", sessionId).ConfigureAwait(false);
        ExecutionResult result;
        try
        {
            result = await RunAsync(kernelId, runId, mode, code, opts, flushTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The manager gave up on the call (Callosum CANCEL after its timeout) or the agent is stopping: as
            // Backend.AI's agent, which sends execution_cancelled when its execute task is cancelled.
            await EmitAsync("execution_cancelled", sessionId).ConfigureAwait(false);
            throw;
        }
        if (result.Status == ExecutionStatus.Finished)
        {
            await EmitAsync("execution_finished", sessionId).ConfigureAwait(false);
        }
        else if (result.Status == ExecutionStatus.ExecTimeout)
        {
            await EmitAsync("execution_timeout", sessionId).ConfigureAwait(false);
            // As Backend.AI's agent: a run over its time limit ends the kernel.
            RunInBackground(ct => DestroyAndAnnounceAsync(kernelId, sessionId, KernelLifecycleReasons.ExecTimeout, false, ct));
        }
        return ResultMap(result, apiVersion);
    }

    private static ExecutionMode ModeOf(string mode) => mode switch
    {
        "query" => ExecutionMode.Query,
        "batch" => ExecutionMode.Batch,
        "input" => ExecutionMode.Input,
        "continue" => ExecutionMode.Continue,
        _ => throw new BackendAiRpcException("InvalidArgument", $"mode '{mode}' is not one of query, batch, input, continue"),
    };

    /// <summary>One execute: output until the run reaches an end or the flush timeout passes (then status continued).</summary>
    private async Task<ExecutionResult> RunAsync(string kernelId, string runId, ExecutionMode mode, string code,
        Dictionary<object, object?> opts, double? flushTimeout, CancellationToken cancellationToken)
    {
        if (flushTimeout is < 0 or double.NaN)
            throw new BackendAiRpcException("ValueError", $"flush_timeout must be >= 0 (got {flushTimeout})");
        var options = new ExecutionOptions
        {
            StreamingFlushTimeout = flushTimeout is { } seconds ? TimeSpan.FromSeconds(seconds) : null,
            Clean = OptionalText(Field(opts, "clean"), "opts.clean") ?? "",
            Build = OptionalText(Field(opts, "build"), "opts.build") ?? "",
            Exec = OptionalText(Field(opts, "exec"), "opts.exec") ?? "",
        };
        var console = new List<ConsoleItem>();
        ExecutionResult? end = null;
        await foreach (var item in _agent.ExecuteAsync(kernelId, runId, mode, code, options, cancellationToken).ConfigureAwait(false))
        {
            switch (item)
            {
                case OutputEvent output:
                    // Adjacent stdout (stderr) chunks become one entry, as Backend.AI's agent sends them.
                    if (console.Count > 0 && output.Item.Mime is null && output.Item.Kind is "stdout" or "stderr" &&
                        console[^1].Kind == output.Item.Kind && console[^1].Mime is null)
                    {
                        console[^1] = console[^1] with { Data = console[^1].Data + output.Item.Data };
                    }
                    else
                    {
                        console.Add(output.Item);
                    }
                    break;
                case ResultEvent final:
                    end = final.Result;
                    break;
            }
        }
        if (end is null)
            throw new BackendAiRpcException("RuntimeError", $"kernel {kernelId}: the run {runId} ended without a result");
        return end with { Console = console };
    }

    /// <summary>The result dict (BA25 agent/kernel.py NextResult): console pairs, or api_version 1's stdout/stderr/media/html.</summary>
    private static Dictionary<object, object?> ResultMap(ExecutionResult result, long apiVersion)
    {
        var map = new Dictionary<object, object?>
        {
            ["runId"] = result.RunId,
            ["status"] = result.Status,
            ["exitCode"] = result.ExitCode is int code ? (long)code : null,
            ["options"] = result.Options is { } options ? FromJson(options) : null,
            ["files"] = System.Array.Empty<object?>(),
        };
        if (apiVersion == 1)
        {
            map["stdout"] = string.Concat(result.Console.Where(c => c.Kind == "stdout").Select(c => c.Data));
            map["stderr"] = string.Concat(result.Console.Where(c => c.Kind == "stderr").Select(c => c.Data));
            map["media"] = result.Console.Where(c => c.Mime is not null).Select(c => (object?)new object?[] { c.Mime, c.Data }).ToArray();
            map["html"] = result.Console.Where(c => c.Kind == "html").Select(c => (object?)c.Data).ToArray();
        }
        else
        {
            map["console"] = result.Console.Select(c => (object?)(c.Mime is { } mime
                ? new object?[] { c.Kind, new object?[] { mime, c.Data } }
                : new object?[] { c.Kind, c.Data })).ToArray();
        }
        return map;
    }

    /// <summary>Runs the batch session's startup command, then reports session_success or session_failure.</summary>
    private Task<object?> TriggerBatchExecutionAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var sessionId = Id(Get(call, 0, "session_id"), "session_id");
        var kernelId = Id(Get(call, 1, "kernel_id"), "kernel_id");
        var code = Text(Get(call, 2, "code"), "code");
        var timeout = Double(Get(call, 3, "timeout", required: false), "timeout");
        _agent.GetSession(kernelId); // an unknown kernel is the caller's error, not a background failure
        RunInBackground(ct => RunBatchAsync(sessionId, kernelId, code, timeout, ct));
        return NoResult;
    }

    private async Task RunBatchAsync(string sessionId, string kernelId, string code, double? timeout, CancellationToken cancellationToken)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (timeout is > 0)
            limit.CancelAfter(TimeSpan.FromSeconds(timeout.Value));
        var runId = Guid.NewGuid().ToString("N");
        var opts = new Dictionary<object, object?> { ["exec"] = code };
        try
        {
            var result = await RunAsync(kernelId, runId, ExecutionMode.Batch, "", opts, null, limit.Token).ConfigureAwait(false);
            while (!result.RunEnded)
                result = await RunAsync(kernelId, runId, ExecutionMode.Continue, "", [], null, limit.Token).ConfigureAwait(false);
            if (result.Status == ExecutionStatus.Finished && result.ExitCode == 0)
                await EmitAsync("session_success", sessionId, KernelLifecycleReasons.TaskFinished, 0L).ConfigureAwait(false);
            else if (result.Status == ExecutionStatus.ExecTimeout)
                await EmitAsync("session_failure", sessionId, KernelLifecycleReasons.TaskTimeout, -2L).ConfigureAwait(false);
            else
                await EmitAsync("session_failure", sessionId, KernelLifecycleReasons.TaskFailed, (long)(result.ExitCode ?? -1)).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            await _agent.InterruptAsync(kernelId, CancellationToken.None).ConfigureAwait(false);
            await EmitAsync("session_failure", sessionId, KernelLifecycleReasons.TaskTimeout, -2L).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SessionEndedException or SessionNotFoundException or RunnerUnavailableException)
        {
            await EmitAsync("session_failure", sessionId, KernelLifecycleReasons.TaskFailed, -1L).ConfigureAwait(false);
        }
    }

    private async Task<object?> InterruptKernelAsync(RpcCall call, CancellationToken cancellationToken)
    {
        await _agent.InterruptAsync(Id(Get(call, 0, "kernel_id"), "kernel_id"), cancellationToken).ConfigureAwait(false);
        return new Dictionary<object, object?> { ["status"] = "finished" };
    }

    private async Task<object?> GetCompletionsAsync(RpcCall call, CancellationToken cancellationToken)
    {
        var kernelId = Id(Get(call, 0, "kernel_id"), "kernel_id");
        var text = Text(Get(call, 1, "text"), "text");
        var opts = Get(call, 2, "opts", required: false) is { } o ? Map(o, "opts") : [];
        var request = new CompletionRequest
        {
            Code = text,
            Row = (int?)Long(Field(opts, "row"), "opts.row"),
            Column = (int?)Long(Field(opts, "col"), "opts.col"),
            Line = OptionalText(Field(opts, "line"), "opts.line"),
            Post = OptionalText(Field(opts, "post"), "opts.post"),
        };
        var session = _agent.GetSession(kernelId);
        try
        {
            var suggestions = await session.Runner.CompleteAsync(request, cancellationToken).ConfigureAwait(false);
            return Completions("finished", null, suggestions);
        }
        catch (Exception e) when (e is RunnerUnavailableException or InvalidOperationException)
        {
            return Completions("failed", e.Message, []);
        }
    }

    private static Dictionary<object, object?> Completions(string status, string? error, IReadOnlyList<string> suggestions) => new()
    {
        ["result"] = new Dictionary<object, object?>
        {
            ["status"] = status,
            ["error"] = error,
            ["suggestions"] = suggestions.Select(s => (object?)s).ToArray(),
        },
    };
}
