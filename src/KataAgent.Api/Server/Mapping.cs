using Google.Protobuf.WellKnownTypes;
using KataAgent.Api.V1;
using KataAgent.Core.Scratch;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using CoreExecutionMode = KataAgent.Runner.Protocol.ExecutionMode;
using CoreImageDetails = KataAgent.Images.ImageDetails;
using CoreCreateStepTiming = KataAgent.Core.Sessions.CreateStepTiming;
using CoreSessionEvent = KataAgent.Core.Sessions.SessionEvent;
using ProtoCreateStepTiming = KataAgent.Api.V1.CreateStepTiming;
using ProtoExecutionMode = KataAgent.Api.V1.ExecutionMode;
using ProtoSessionEvent = KataAgent.Api.V1.SessionEvent;

namespace KataAgent.Api.Server;

/// <summary>Core types to wire types and back; the only place that knows both.</summary>
public static class Mapping
{
    public static string StateName(SessionState state) => state.ToString().ToLowerInvariant();

    public static SessionInfo ToProto(Session session)
    {
        var r = session.Record;
        var info = FromRecord(r, session.State, session.OutOfMemory, session.ExitCode);
        // A run cut short by the session's end is not active; the end reason says what happened to it.
        info.ActiveRunId = session.EndReason is null ? session.Runner.ActiveRunId ?? "" : "";
        info.Ports.AddRange(r.Ports.Select(p => new V1.PublishedPort
        {
            Name = p.Name,
            Protocol = p.Protocol,
            ContainerPort = p.ContainerPort,
            HostIp = p.HostIp,
            HostPort = p.HostPort,
        }));
        info.ServicePorts.AddRange(r.ServicePorts.Select(p =>
        {
            var port = new ServicePortInfo { Name = p.Name, Protocol = p.Protocol, UrlTemplate = p.UrlTemplate ?? "" };
            port.ContainerPorts.AddRange(p.ContainerPorts);
            port.AllowedArguments.AddRange(p.AllowedArguments);
            port.AllowedEnvs.AddRange(p.AllowedEnvs);
            return port;
        }));
        info.CreateSteps.AddRange(session.CreateSteps.Select(ToProto));
        if (session.EndReason is { } reason)
        {
            info.EndReason = ToProto(reason);
        }
        else
        {
            if (session.IdleDeadline is { } idle)
                info.IdleDeadline = Timestamp.FromDateTimeOffset(idle);
            if (session.LifetimeDeadline is { } lifetime)
                info.LifetimeDeadline = Timestamp.FromDateTimeOffset(lifetime);
        }
        return info;
    }

    /// <summary>An ended session within the retention: its record, state destroyed, and how it ended.</summary>
    public static SessionInfo ToProto(SessionTombstone tombstone)
    {
        var info = FromRecord(tombstone.Record, SessionState.Destroyed, tombstone.OutOfMemory, tombstone.ExitCode);
        info.EndReason = ToProto(tombstone.EndReason);
        return info;
    }

    /// <summary>What a session's record says, live or ended.</summary>
    private static SessionInfo FromRecord(SessionRecord r, SessionState state, bool outOfMemory, int? exitCode)
    {
        var info = new SessionInfo
        {
            KernelId = r.KernelId,
            SessionId = r.SessionId,
            Image = r.Image,
            RuntimeClass = r.RuntimeClass,
            State = StateName(state),
            OutOfMemory = outOfMemory,
            Cpus = r.Cpus,
            MemoryBytes = r.MemoryBytes,
            ShmBytes = r.ShmBytes,
            CreatedAt = Timestamp.FromDateTimeOffset(r.CreatedAt),
            ScratchDir = r.ScratchDir,
        };
        if (exitCode is int code)
            info.ExitCode = code;
        info.Features.AddRange(r.Features ?? []);
        info.RunnerCommand.AddRange(r.RunnerCommand ?? []);
        return info;
    }

    public static V1.SessionEndReason ToProto(Core.Sessions.SessionEndReason reason)
    {
        var proto = new V1.SessionEndReason
        {
            Kind = reason.Name,
            At = Timestamp.FromDateTimeOffset(reason.At),
            By = reason.By?.ToString().ToLowerInvariant() ?? "",
            Step = reason.Step ?? "",
            Description = reason.Describe(),
        };
        if (reason.ExitCode is int code)
            proto.ExitCode = code;
        if (reason.Signal is int signal)
            proto.Signal = signal;
        if (reason.MemoryLimitBytes is long limit)
            proto.MemoryLimitBytes = limit;
        return proto;
    }

    public static SessionRequest FromProto(CreateSessionRequest request)
    {
        if (string.IsNullOrWhiteSpace(request.Image))
            throw new SessionRequestException("image is required");
        return new SessionRequest
        {
            Image = request.Image,
            RuntimeClass = Empty(request.RuntimeClass),
            KernelId = Empty(request.KernelId),
            SessionId = Empty(request.SessionId),
            Cpus = request.HasCpus ? request.Cpus : null,
            MemoryBytes = request.HasMemoryBytes ? request.MemoryBytes : null,
            ShmBytes = request.HasShmBytes ? request.ShmBytes : null,
            ScratchBytes = request.HasScratchBytes ? request.ScratchBytes : null,
            Environment = new Dictionary<string, string>(request.Environment, StringComparer.Ordinal),
            Mounts = request.Mounts.Select(m => new MountRequest(m.HostPath, m.ContainerPath, m.ReadOnly)).ToList(),
            Labels = new Dictionary<string, string>(request.Labels, StringComparer.Ordinal),
            BootstrapScript = Empty(request.BootstrapScript),
            ServicePorts = request.ServicePorts.Select(p => new ServicePortDefinition(p.Name, p.Protocol, p.ContainerPorts.ToList())).ToList(),
            Uid = request.HasUid ? request.Uid : null,
            Gid = request.HasGid ? request.Gid : null,
            Egress = request.Egress switch
            {
                "" => null,
                "public" => KataAgent.Network.Isolation.EgressPolicy.Public,
                "none" => KataAgent.Network.Isolation.EgressPolicy.None,
                var other => throw new SessionRequestException($"egress '{other}' is not one of: public, none"),
            },
            AddCapabilities = request.AddCapabilities.ToList(),
            RunnerCommand = request.RunnerCommand.ToList(),
            IdleTimeout = request.HasIdleTimeoutSeconds ? Seconds(request.IdleTimeoutSeconds, "idle_timeout_seconds") : null,
            MaxLifetime = request.HasMaxLifetimeSeconds ? Seconds(request.MaxLifetimeSeconds, "max_lifetime_seconds") : null,
            ExecTimeout = request.HasExecTimeoutSeconds ? Seconds(request.ExecTimeoutSeconds, "exec_timeout_seconds") : null,
        };
    }

    /// <summary>A timeout in seconds: zero (none) up to ten years.</summary>
    public static TimeSpan Seconds(double seconds, string field) =>
        double.IsFinite(seconds) && seconds >= 0 && seconds <= TimeSpan.FromDays(3650).TotalSeconds
            ? TimeSpan.FromSeconds(seconds)
            : throw new SessionRequestException($"{field} must be between 0 and 315360000 seconds (got {seconds})");

    public static CoreExecutionMode FromProto(ProtoExecutionMode mode) => mode switch
    {
        ProtoExecutionMode.Query => CoreExecutionMode.Query,
        ProtoExecutionMode.Batch => CoreExecutionMode.Batch,
        ProtoExecutionMode.Input => CoreExecutionMode.Input,
        ProtoExecutionMode.Continue => CoreExecutionMode.Continue,
        _ => throw new ArgumentException("mode is required: query, batch, input or continue"),
    };

    public static ExecuteReply ToProto(ExecutionEvent e) => e switch
    {
        OutputEvent o => new ExecuteReply { Output = ToProto(o.Item) },
        ResultEvent r => new ExecuteReply { Result = ToProto(r.Result) },
        _ => throw new InvalidOperationException($"unknown execution event {e.GetType().Name}"),
    };

    public static V1.ConsoleItem ToProto(Runner.Protocol.ConsoleItem item)
    {
        var proto = new V1.ConsoleItem { Kind = item.Kind, Data = item.Data };
        if (item.Mime is { } mime)
            proto.Mime = mime;
        return proto;
    }

    /// <summary>exit_code and options_json are unset (not 0 / "") when the runner gave none.</summary>
    public static V1.ExecutionResult ToProto(Runner.Protocol.ExecutionResult result)
    {
        var proto = new V1.ExecutionResult
        {
            RunId = result.RunId,
            Status = result.Status,
            DroppedCharacters = result.DroppedCharacters,
            RunEnded = result.RunEnded,
        };
        if (result.ExitCode is int code)
            proto.ExitCode = code;
        if (result.Options is { } options)
            proto.OptionsJson = options.GetRawText();
        return proto;
    }

    public static GetAppsReply ToProto(AppsResult apps)
    {
        var reply = new GetAppsReply { Json = apps.Json, Status = apps.Status, Error = apps.Error ?? "" };
        foreach (var app in apps.Apps)
        {
            var proto = new V1.ServiceApp { Name = app.Name };
            if (app.UrlTemplate is { } url)
                proto.UrlTemplate = url;
            proto.AllowedArguments.AddRange(app.AllowedArguments ?? []);
            proto.AllowedEnvs.AddRange(app.AllowedEnvs ?? []);
            reply.Apps.Add(proto);
        }
        return reply;
    }

    public static ProtoSessionEvent ToProto(CoreSessionEvent e)
    {
        var proto = new ProtoSessionEvent
        {
            KernelId = e.KernelId,
            Kind = e.Kind,
            State = StateName(e.State),
            At = Timestamp.FromDateTimeOffset(e.At),
            Detail = e.Detail ?? "",
        };
        if (e.ExitCode is int code)
            proto.ExitCode = code;
        if (e.EndReason is { } reason)
            proto.EndReason = ToProto(reason);
        return proto;
    }

    public static FileEntry ToProto(ScratchEntry entry) => new()
    {
        Name = entry.Name,
        Type = entry.Type switch
        {
            ScratchEntryType.CharDevice => "char-device",
            ScratchEntryType.BlockDevice => "block-device",
            var t => t.ToString().ToLowerInvariant(),
        },
        Size = entry.Size,
        Mode = (uint)entry.Mode,
        ModifiedAt = Timestamp.FromDateTimeOffset(entry.ModifiedAt),
        LinkTarget = entry.LinkTarget ?? "",
    };

    public static ImageInfo ToProto(CoreImageDetails details, DateTimeOffset? createdAt = null)
    {
        var info = new ImageInfo
        {
            Name = details.Name,
            Digest = details.Target.Digest,
            MediaType = details.Target.MediaType,
            Size = details.Size,
            Unpacked = details.Unpacked,
        };
        if (createdAt is { } at)
            info.CreatedAt = Timestamp.FromDateTimeOffset(at);
        return info;
    }

    public static V1.ImageDetails ToProtoDetails(CoreImageDetails details)
    {
        var proto = new V1.ImageDetails
        {
            Image = ToProto(details),
            WorkingDir = details.Config.Config?.WorkingDir ?? "",
            User = details.Config.Config?.User ?? "",
            ChainId = details.ChainId,
        };
        foreach (var (k, v) in details.Labels)
            proto.Labels[k] = v;
        proto.Env.AddRange(details.Config.Config?.Env ?? []);
        proto.Cmd.AddRange(details.Config.Config?.Cmd ?? []);
        proto.Entrypoint.AddRange(details.Config.Config?.Entrypoint ?? []);
        proto.Layers.AddRange(details.Layers.Select(l => l.Digest));
        if (details.UnpackedSize is long size)
            proto.UnpackedSize = size;
        return proto;
    }

    public static V1.SessionStats ToProto(Core.Stats.SessionStats stats)
    {
        var proto = new V1.SessionStats
        {
            KernelId = stats.KernelId,
            Timestamp = Timestamp.FromDateTimeOffset(stats.Timestamp),
            Source = stats.Source,
            CpuUsageNanos = stats.Cpu?.UsageNanos ?? 0,
            MemoryUsageBytes = stats.Memory?.UsageBytes ?? 0,
            MemoryPeakBytes = stats.Memory?.PeakBytes ?? 0,
        };
        if (stats.Cpu?.Percent is double percent)
            proto.CpuPercent = percent;
        if (stats.Memory?.LimitBytes is ulong limit)
            proto.MemoryLimitBytes = limit;
        if (stats.BlockIo is { } io)
            (proto.BlockReadBytes, proto.BlockWriteBytes) = (io.ReadBytes, io.WriteBytes);
        if (stats.Pids is { } pids)
            proto.Pids = pids.Current;
        if (stats.Network is { } net)
            (proto.NetworkRxBytes, proto.NetworkTxBytes) = (net.RxBytes, net.TxBytes);
        return proto;
    }

    private static string? Empty(string value) => string.IsNullOrEmpty(value) ? null : value;

    public static ProtoCreateStepTiming ToProto(CoreCreateStepTiming timing) => new() { Step = timing.Step, Seconds = timing.Elapsed.TotalSeconds };
}
