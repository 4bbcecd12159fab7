using KataAgent.Containerd.Runtime;

namespace KataAgent.Core.Runtime;

/// <summary>A runtime class and whether this host can run it (with the reason when not).</summary>
public sealed record RuntimeClassStatus(RuntimeClass Class, bool Usable, string Detail);

/// <summary>The runtime classes the agent offers: kata (production), gvisor, runc (development only).</summary>
public sealed class RuntimeClassRegistry
{
    private readonly Dictionary<string, RuntimeClassStatus> _classes;

    private RuntimeClassRegistry(Dictionary<string, RuntimeClassStatus> classes, string defaultClass, string? fallbackWarning)
    {
        _classes = classes;
        DefaultClass = defaultClass;
        FallbackWarning = fallbackWarning;
    }

    public string DefaultClass { get; }
    /// <summary>Set when the configured default could not be used: say it loudly.</summary>
    public string? FallbackWarning { get; }
    public IReadOnlyCollection<RuntimeClassStatus> All => _classes.Values;

    public static async Task<RuntimeClassRegistry> CreateAsync(AgentOptions options, CancellationToken cancellationToken = default)
    {
        var gvisorWrapper = await GvisorWrapper.EnsureAsync(Path.Combine(options.DataDir, "bin"), options.RunscPath, cancellationToken).ConfigureAwait(false);
        var classes = new Dictionary<string, RuntimeClassStatus>(StringComparer.Ordinal)
        {
            ["kata"] = Check(RuntimeClass.Kata(options.KataConfigPath), HostChecks.Kata()),
            ["gvisor"] = Check(RuntimeClass.Gvisor(gvisorWrapper), HostChecks.Gvisor(options.RunscPath)),
            ["runc"] = Check(RuntimeClass.Runc(), HostChecks.Runc()),
        };
        if (!classes.TryGetValue(options.DefaultRuntimeClass, out var wanted))
            throw new ArgumentException($"default runtime class '{options.DefaultRuntimeClass}' is unknown (kata, gvisor, runc)", nameof(options));
        if (wanted.Usable)
            return new RuntimeClassRegistry(classes, wanted.Class.Name, wanted.Class.Name == "runc" ? RuncWarning : null);

        // Prefer the next-strongest sandbox; runc is the last resort and is announced as such.
        foreach (var candidate in new[] { "kata", "gvisor", "runc" })
        {
            if (classes[candidate].Usable)
            {
                var warning = $"default runtime class '{wanted.Class.Name}' is not usable here ({wanted.Detail}); using '{candidate}' instead." +
                              (candidate == "runc" ? " " + RuncWarning : "");
                return new RuntimeClassRegistry(classes, candidate, warning);
            }
        }
        return new RuntimeClassRegistry(classes, wanted.Class.Name, "no runtime class is usable on this host: " +
            string.Join("; ", classes.Values.Select(c => $"{c.Class.Name}: {c.Detail}")));
    }

    public const string RuncWarning = "WARNING: runc does not isolate untrusted code from the host kernel; use it for development only.";

    /// <summary>The class for a request (null = default), or a clear error.</summary>
    public RuntimeClassStatus Resolve(string? name)
    {
        name ??= DefaultClass;
        if (!_classes.TryGetValue(name, out var status))
            throw new ArgumentException($"unknown runtime class '{name}' (known: {string.Join(", ", _classes.Keys)})");
        if (!status.Usable)
            throw new InvalidOperationException($"runtime class '{name}' cannot run on this host: {status.Detail}");
        return status;
    }

    private static RuntimeClassStatus Check(RuntimeClass runtimeClass, IReadOnlyList<HostCheck> checks)
    {
        var failed = checks.Where(c => !c.Ok).ToList();
        return failed.Count == 0
            ? new RuntimeClassStatus(runtimeClass, true, "ok")
            : new RuntimeClassStatus(runtimeClass, false, string.Join("; ", failed.Select(c => $"{c.Name}: {c.Detail}")));
    }
}
