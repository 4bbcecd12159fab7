using KataAgent.Containerd.Runtime;

namespace KataAgent.Core.Runtime;

/// <summary>
/// A runtime class as this host has it: its table entry, the containerd runtime built for this host, whether it can
/// run here (with the reason when not), and the host memory each of its sessions costs beyond its allocation.
/// </summary>
public sealed record RuntimeClassStatus(RuntimeClassDefinition Definition, RuntimeClass Class, bool Usable, string Detail, long OverheadBytes);

/// <summary>The runtime classes the agent offers (the entries of <see cref="RuntimeClassTable"/>), checked on this host.</summary>
public sealed class RuntimeClassRegistry
{
    private readonly Dictionary<string, RuntimeClassStatus> _classes;
    private readonly IReadOnlyList<string> _allowed;

    private RuntimeClassRegistry(Dictionary<string, RuntimeClassStatus> classes, IReadOnlyList<string> allowed, string defaultClass, string? fallbackWarning)
    {
        _classes = classes;
        _allowed = allowed;
        DefaultClass = defaultClass;
        FallbackWarning = fallbackWarning;
    }

    /// <summary>The config key that lists the classes a request may ask for (named in errors).</summary>
    public const string AllowedClassesKey = "runtime.allowed_classes";

    public string DefaultClass { get; }
    /// <summary>Set when the configured default could not be used, or runc is all that is left: say it loudly.</summary>
    public string? FallbackWarning { get; }
    public IReadOnlyCollection<RuntimeClassStatus> All => _classes.Values;
    /// <summary>The classes a request may ask for (runtime.allowed_classes), in the configured order.</summary>
    public IReadOnlyList<string> Allowed => _allowed;

    public static async Task<RuntimeClassRegistry> CreateAsync(AgentOptions options, CancellationToken cancellationToken = default)
    {
        var gvisorWrapper = await GvisorWrapper.EnsureAsync(Path.Combine(options.DataDir, "bin"), options.RunscPath, cancellationToken).ConfigureAwait(false);
        var settings = new RuntimeClassSettings(options, gvisorWrapper);
        var classes = RuntimeClassTable.All.ToDictionary(d => d.Name, d => Check(d, settings), StringComparer.Ordinal);
        var allowed = options.AllowedRuntimeClasses.Distinct(StringComparer.Ordinal).ToList();
        foreach (var name in allowed.Where(n => !classes.ContainsKey(n)))
            throw new ArgumentException($"{AllowedClassesKey}: runtime class '{name}' is unknown ({RuntimeClassTable.Names})", nameof(options));
        if (allowed.Count == 0)
            throw new ArgumentException($"{AllowedClassesKey} is empty: no session could run (production: [\"kata\", \"gvisor\"])", nameof(options));
        if (!classes.TryGetValue(options.DefaultRuntimeClass, out var wanted))
            throw new ArgumentException($"default runtime class '{options.DefaultRuntimeClass}' is unknown ({RuntimeClassTable.Names})", nameof(options));
        if (!allowed.Contains(wanted.Class.Name, StringComparer.Ordinal))
            throw new ArgumentException($"default runtime class '{wanted.Class.Name}' is not in {AllowedClassesKey} ({string.Join(", ", allowed)})", nameof(options));
        var runcOnly = RuncIsAllThatIsLeft(classes, allowed) ? RuncOnlyWarning : null;
        if (wanted.Usable)
            return new RuntimeClassRegistry(classes, allowed, wanted.Class.Name, wanted.Definition.IsolatesKernel ? runcOnly : Join(RuncWarning, runcOnly));

        // Fall back to the next-strongest allowed sandbox (table order), never to runc: it becomes the default only when configured so.
        foreach (var candidate in RuntimeClassTable.All.Where(d => d.IsolatesKernel).Select(d => d.Name))
        {
            if (allowed.Contains(candidate, StringComparer.Ordinal) && classes[candidate].Usable)
            {
                var warning = $"default runtime class '{wanted.Class.Name}' is not usable here ({wanted.Detail}); using '{candidate}' instead.";
                return new RuntimeClassRegistry(classes, allowed, candidate, warning);
            }
        }
        return new RuntimeClassRegistry(classes, allowed, wanted.Class.Name, Join("no sandboxed runtime class is usable on this host: " +
            string.Join("; ", allowed.Where(n => classes[n].Definition.IsolatesKernel).Select(n => $"{n}: {classes[n].Detail}")), runcOnly));
    }

    public const string RuncWarning = "WARNING: runc does not isolate untrusted code from the host kernel; use it for development only.";

    public const string RuncOnlyWarning = "WARNING: runc is the only runtime class left that this agent may run here (no usable kata or gvisor): " +
        "sessions are not sandboxed from the host kernel; use it for development only.";

    /// <summary>Of the allowed classes, only runc (the one class that shares the host kernel) can run on this host.</summary>
    private static bool RuncIsAllThatIsLeft(Dictionary<string, RuntimeClassStatus> classes, IReadOnlyList<string> allowed)
    {
        var usable = allowed.Where(n => classes[n].Usable).ToList();
        return usable is [var only] && !classes[only].Definition.IsolatesKernel;
    }

    private static string? Join(string? first, string? second) =>
        first is null ? second : second is null ? first : first + " " + second;

    /// <summary>A class by name whether or not it is allowed or usable now (an existing session's, at recovery).</summary>
    public RuntimeClassStatus Known(string name) =>
        _classes.TryGetValue(name, out var status) ? status : throw new ArgumentException($"unknown runtime class '{name}' (known: {string.Join(", ", _classes.Keys)})");

    /// <summary>The class for a request (null = default), or a clear error.</summary>
    public RuntimeClassStatus Resolve(string? name)
    {
        name ??= DefaultClass;
        if (!_classes.TryGetValue(name, out var status))
            throw new ArgumentException($"unknown runtime class '{name}' (known: {string.Join(", ", _classes.Keys)})");
        if (!_allowed.Contains(name, StringComparer.Ordinal))
            throw new ArgumentException($"runtime class '{name}' is not allowed on this agent ({AllowedClassesKey}: {string.Join(", ", _allowed)})");
        if (!status.Usable)
            throw new InvalidOperationException($"runtime class '{name}' cannot run on this host: {status.Detail}");
        return status;
    }

    private static RuntimeClassStatus Check(RuntimeClassDefinition definition, RuntimeClassSettings settings)
    {
        var runtime = definition.BuildRuntime(settings);
        var overhead = definition.OverheadBytes(settings.Options);
        var failed = definition.HostChecks(settings.Options).Where(c => !c.Ok).ToList();
        return failed.Count == 0
            ? new RuntimeClassStatus(definition, runtime, true, "ok", overhead)
            : new RuntimeClassStatus(definition, runtime, false, string.Join("; ", failed.Select(c => $"{c.Name}: {c.Detail}")), overhead);
    }
}
