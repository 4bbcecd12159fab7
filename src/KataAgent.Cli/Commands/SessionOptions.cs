using System.CommandLine;
using KataAgent.Api.V1;
using KataAgent.Cli.Config;

namespace KataAgent.Cli.Commands;

/// <summary>The options that shape a new session (shared by `run` and `session create`).</summary>
internal sealed class SessionOptions
{
    public Option<string?> Runtime { get; } = new("--runtime", "-r") { Description = "Runtime class: kata, gvisor or runc (default: runtime.default_class)" };
    public Option<double?> Cpu { get; } = new("--cpu") { Description = "CPU cores (default: resources.default_cpus)" };
    public Option<string?> Memory { get; } = new("--mem", "-m") { Description = "Memory, e.g. 512m, 2GiB (default: resources.default_memory)" };
    public Option<string?> Scratch { get; } = new("--scratch") { Description = "Hard size of /home/work, e.g. 1GiB (at least 16MiB; default: resources.default_scratch)" };
    public Option<string[]> Env { get; } = new("--env", "-e") { Description = "Environment variable K=V (repeatable; K alone takes it from here)" };
    public Option<string[]> Volume { get; } = new("--volume", "-v") { Description = "Bind mount HOST:CONTAINER[:ro] (repeatable; HOST under agent.allowed_mount_roots)" };
    public Option<string[]> Label { get; } = new("--label", "-l") { Description = "Label K=V on the session (repeatable)" };
    public Option<string?> Egress { get; } = new("--egress") { Description = "What the session may reach: public (the public internet only) or none (default: network.egress)" };
    public Option<string[]> CapAdd { get; } = new("--cap-add") { Description = "Add a capability beyond the default set, e.g. CAP_NET_RAW (repeatable; must be in agent.allowed_capabilities)" };
    public Option<string?> ImageRunner { get; } = new("--image-runner") { Description = "Run the image's own kernel runner, this command line, instead of the agent's, e.g. \"python3 -m ai.backend.kernel python /usr/bin/python3\" (driven without CURVE; an image's io.kata-agent.runner-command label does the same)" };

    public Option<string?> IdleTimeout { get; } = new("--idle-timeout") { Description = "End the session after this long without an execute or file transfer, e.g. 30m (0: never; default: timeouts.idle)" };
    public Option<string?> MaxLifetime { get; } = new("--max-lifetime") { Description = "End the session this long after its creation, e.g. 8h (0: unlimited; default: timeouts.max_lifetime; session extend adds to it)" };
    public Option<string?> SessionExecTimeout { get; } = new("--session-exec-timeout") { Description = "A run longer than this is stopped and the session ends (exec-timeout), e.g. 1h (0: none; default: timeouts.exec)" };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Runtime, Cpu, Memory, Scratch, Env, Volume, Label, Egress, CapAdd, ImageRunner, IdleTimeout, MaxLifetime, SessionExecTimeout })
            command.Options.Add(option);
    }

    public CreateSessionRequest ToRequest(ParseResult parse, string image)
    {
        var request = new CreateSessionRequest { Image = image, RuntimeClass = parse.GetValue(Runtime) ?? "" };
        if (parse.GetValue(Cpu) is double cpus)
            request.Cpus = cpus > 0 ? cpus : throw new CliException("--cpu: must be more than 0", 2);
        if (parse.GetValue(Memory) is { } mem)
            request.MemoryBytes = Sizes.TryParse(mem, out var bytes) && bytes > 0 ? bytes : throw new CliException($"--mem: '{mem}' is not a size like 512m or 2GiB", 2);
        if (parse.GetValue(Scratch) is { } scratch)
            request.ScratchBytes = Sizes.TryParse(scratch, out var scratchBytes) && scratchBytes > 0 ? scratchBytes : throw new CliException($"--scratch: '{scratch}' is not a size like 512m or 2GiB", 2);
        foreach (var item in parse.GetValue(Env) ?? [])
        {
            var eq = item.IndexOf('=', StringComparison.Ordinal);
            if (eq == 0)
                throw new CliException($"--env: '{item}' has no name (K=V)", 2);
            if (eq < 0)
                request.Environment[item] = Environment.GetEnvironmentVariable(item) ?? "";
            else
                request.Environment[item[..eq]] = item[(eq + 1)..];
        }
        if (parse.GetValue(Egress) is { } egress)
            request.Egress = egress is "public" or "none" ? egress : throw new CliException($"--egress: '{egress}' is not public or none", 2);
        foreach (var item in parse.GetValue(CapAdd) ?? [])
            request.AddCapabilities.Add(item.StartsWith("CAP_", StringComparison.Ordinal) ? item : "CAP_" + item.ToUpperInvariant());
        if (parse.GetValue(ImageRunner) is { } runner)
        {
            IReadOnlyList<string> words;
            try
            {
                words = KataAgent.Core.Sessions.ImageLabels.SplitCommandLine(runner);
            }
            catch (FormatException e)
            {
                throw new CliException($"--image-runner: {e.Message}", 2);
            }
            request.RunnerCommand.AddRange(words.Count > 0 ? words : throw new CliException("--image-runner: the command is empty", 2));
        }
        foreach (var item in parse.GetValue(Volume) ?? [])
            request.Mounts.Add(ParseVolume(item));
        if (parse.GetValue(IdleTimeout) is { } idle)
            request.IdleTimeoutSeconds = ParseDuration("--idle-timeout", idle).TotalSeconds;
        if (parse.GetValue(MaxLifetime) is { } lifetime)
            request.MaxLifetimeSeconds = ParseDuration("--max-lifetime", lifetime).TotalSeconds;
        if (parse.GetValue(SessionExecTimeout) is { } exec)
            request.ExecTimeoutSeconds = ParseDuration("--session-exec-timeout", exec).TotalSeconds;
        foreach (var item in parse.GetValue(Label) ?? [])
        {
            var eq = item.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
                throw new CliException($"--label: '{item}' is not K=V", 2);
            request.Labels[item[..eq]] = item[(eq + 1)..];
        }
        return request;
    }

    public static TimeSpan ParseDuration(string option, string text) =>
        Durations.TryParse(text, out var value) && value >= TimeSpan.Zero
            ? value
            : throw new CliException($"{option}: '{text}' is not a duration like 30s, 5m or 1h", 2);

    public static MountSpec ParseVolume(string text)
    {
        var parts = text.Split(':');
        if (parts.Length is < 2 or > 3 || parts[0].Length == 0 || parts[1].Length == 0 || (parts.Length == 3 && parts[2] is not ("ro" or "rw")))
            throw new CliException($"--volume: '{text}' is not HOST:CONTAINER[:ro]", 2);
        if (!parts[1].StartsWith('/'))
            throw new CliException($"--volume: the container path '{parts[1]}' must be absolute", 2);
        return new MountSpec { HostPath = Path.GetFullPath(parts[0]), ContainerPath = parts[1], ReadOnly = parts.Length == 3 && parts[2] == "ro" };
    }
}
