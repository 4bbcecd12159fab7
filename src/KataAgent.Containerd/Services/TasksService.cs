using Containerd.Services.Tasks.V1;
using Containerd.Types;
using Containerd.V1.Types;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;

namespace KataAgent.Containerd.Services;

/// <summary>Where a process's stdio goes: shim-understood URIs or FIFO paths; empty = /dev/null.</summary>
public sealed record TaskIo(string Stdin = "", string Stdout = "", string Stderr = "", bool Terminal = false)
{
    public static TaskIo Null { get; } = new();

    /// <summary>The shim appends stdout and stderr to files directly (file:// URIs).</summary>
    public static TaskIo ToFiles(string stdoutPath, string stderrPath) =>
        new(Stdout: new Uri(stdoutPath).AbsoluteUri, Stderr: new Uri(stderrPath).AbsoluteUri);
}

public sealed record TaskExit(uint ExitStatus, DateTimeOffset ExitedAt)
{
    public int Code => (int)ExitStatus;
}

/// <summary>A container's task that no longer runs: gone (exit status unknown) or stopped (containerd still holds its status).</summary>
public sealed record EndedTask(uint? ExitStatus)
{
    public int? Code => (int?)ExitStatus;
}

public sealed class TasksService(CallInvoker invoker)
{
    private readonly Tasks.TasksClient _client = new(invoker);

    /// <returns>The task's pid (the sandbox process under gVisor, the hypervisor's under Kata).</returns>
    public Task<uint> CreateAsync(string containerId, IEnumerable<Mount> rootfs, TaskIo io, Any? runtimeOptions = null,
        string? runtimePath = null, CancellationToken cancellationToken = default) =>
        Rpc.Call($"tasks.create {containerId}", async () =>
        {
            var request = new CreateTaskRequest
            {
                ContainerId = containerId,
                Stdin = io.Stdin,
                Stdout = io.Stdout,
                Stderr = io.Stderr,
                Terminal = io.Terminal,
                Options = runtimeOptions,
                RuntimePath = runtimePath ?? "",
            };
            request.Rootfs.Add(rootfs);
            return (await _client.CreateAsync(request, cancellationToken: cancellationToken)).Pid;
        });

    public Task<uint> StartAsync(string containerId, string? execId = null, CancellationToken cancellationToken = default) =>
        Rpc.Call($"tasks.start {containerId}", async () =>
            (await _client.StartAsync(new StartRequest { ContainerId = containerId, ExecId = execId ?? "" }, cancellationToken: cancellationToken)).Pid);

    public Task KillAsync(string containerId, uint signal, bool all = false, string? execId = null, CancellationToken cancellationToken = default) =>
        Rpc.Call($"tasks.kill {containerId}", async () =>
            await _client.KillAsync(new KillRequest { ContainerId = containerId, Signal = signal, All = all, ExecId = execId ?? "" }, cancellationToken: cancellationToken));

    /// <summary>Waits until the process exits; returns at once if it already has.</summary>
    public Task<TaskExit> WaitAsync(string containerId, string? execId = null, CancellationToken cancellationToken = default) =>
        Rpc.Call($"tasks.wait {containerId}", async () =>
        {
            var r = await _client.WaitAsync(new WaitRequest { ContainerId = containerId, ExecId = execId ?? "" }, cancellationToken: cancellationToken);
            return new TaskExit(r.ExitStatus, r.ExitedAt?.ToDateTimeOffset() ?? default);
        });

    public Task<TaskExit> DeleteAsync(string containerId, CancellationToken cancellationToken = default) =>
        Rpc.Call($"tasks.delete {containerId}", async () =>
        {
            var r = await _client.DeleteAsync(new DeleteTaskRequest { ContainerId = containerId }, cancellationToken: cancellationToken);
            return new TaskExit(r.ExitStatus, r.ExitedAt?.ToDateTimeOffset() ?? default);
        });

    public Task<TaskExit> DeleteProcessAsync(string containerId, string execId, CancellationToken cancellationToken = default) =>
        Rpc.Call($"tasks.delete-process {containerId}/{execId}", async () =>
        {
            var r = await _client.DeleteProcessAsync(new DeleteProcessRequest { ContainerId = containerId, ExecId = execId }, cancellationToken: cancellationToken);
            return new TaskExit(r.ExitStatus, r.ExitedAt?.ToDateTimeOffset() ?? default);
        });

    public Task<Process> GetAsync(string containerId, string? execId = null, CancellationToken cancellationToken = default) =>
        Rpc.Call($"tasks.get {containerId}", async () =>
            (await _client.GetAsync(new GetRequest { ContainerId = containerId, ExecId = execId ?? "" }, cancellationToken: cancellationToken)).Process);

    public async Task<Process?> FindAsync(string containerId, CancellationToken cancellationToken = default)
    {
        try
        {
            return await GetAsync(containerId, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException)
        {
            return null;
        }
    }

    /// <summary>
    /// The container's task if it has ended — there is none, or it is stopped; null while it is created, running or
    /// paused. The one place that reads a task's status for "is it still alive".
    /// </summary>
    public async Task<EndedTask?> FindEndedAsync(string containerId, CancellationToken cancellationToken = default)
    {
        var task = await FindAsync(containerId, cancellationToken).ConfigureAwait(false);
        if (task is null)
            return new EndedTask(null);
        return task.Status == global::Containerd.V1.Types.Status.Stopped ? new EndedTask(task.ExitStatus) : null;
    }

    public Task<IReadOnlyList<Process>> ListAsync(string filter = "", CancellationToken cancellationToken = default) =>
        Rpc.Call<IReadOnlyList<Process>>("tasks.list", async () =>
            (await _client.ListAsync(new ListTasksRequest { Filter = filter }, cancellationToken: cancellationToken)).Tasks.ToList());

    /// <param name="processSpecJson">OCI runtime-spec Process object as UTF-8 JSON.</param>
    public Task ExecAsync(string containerId, string execId, ReadOnlyMemory<byte> processSpecJson, TaskIo io, CancellationToken cancellationToken = default) =>
        Rpc.Call($"tasks.exec {containerId}/{execId}", async () =>
            await _client.ExecAsync(new ExecProcessRequest
            {
                ContainerId = containerId,
                ExecId = execId,
                Stdin = io.Stdin,
                Stdout = io.Stdout,
                Stderr = io.Stderr,
                Terminal = io.Terminal,
                Spec = TypeUrls.PackJson(TypeUrls.RuntimeProcess, processSpecJson.Span),
            }, cancellationToken: cancellationToken));

    public Task<IReadOnlyList<uint>> PidsAsync(string containerId, CancellationToken cancellationToken = default) =>
        Rpc.Call<IReadOnlyList<uint>>($"tasks.pids {containerId}", async () =>
            (await _client.ListPidsAsync(new ListPidsRequest { ContainerId = containerId }, cancellationToken: cancellationToken))
                .Processes.Select(p => p.Pid).ToList());

    public Task PauseAsync(string containerId, CancellationToken cancellationToken = default) =>
        Rpc.Call($"tasks.pause {containerId}", async () =>
            await _client.PauseAsync(new PauseTaskRequest { ContainerId = containerId }, cancellationToken: cancellationToken));

    public Task ResumeAsync(string containerId, CancellationToken cancellationToken = default) =>
        Rpc.Call($"tasks.resume {containerId}", async () =>
            await _client.ResumeAsync(new ResumeTaskRequest { ContainerId = containerId }, cancellationToken: cancellationToken));

    /// <summary>cgroup metrics per task; the payload is decoded (cgroups v1 or v2 Metrics) when its type is known.</summary>
    public Task<IReadOnlyList<TaskMetrics>> MetricsAsync(CancellationToken cancellationToken = default, params string[] containerIds) =>
        Rpc.Call<IReadOnlyList<TaskMetrics>>("tasks.metrics", async () =>
        {
            var request = new MetricsRequest();
            request.Filters.Add(containerIds.Select(id => $"id=={id}"));
            var r = await _client.MetricsAsync(request, cancellationToken: cancellationToken);
            return r.Metrics.Select(m => new TaskMetrics(m.Id, m.Timestamp?.ToDateTimeOffset() ?? default, TypeUrls.Unpack(m.Data), m.Data?.TypeUrl ?? "")).ToList();
        });
}

public sealed record TaskMetrics(string ContainerId, DateTimeOffset Timestamp, IMessage? Data, string TypeUrl);
