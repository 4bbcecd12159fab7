namespace KataAgent.Runner.Services;

/// <summary>How to start one service, once it has been resolved.</summary>
internal sealed record ServiceLaunch
{
    /// <summary>Where the command came from, for the log (e.g. "service-def /etc/backend.ai/service-defs/x.json").</summary>
    public required string Source { get; init; }

    /// <summary>argv; empty for a noop definition (nothing is started, the answer is "started").</summary>
    public required IReadOnlyList<string> Argv { get; init; }

    /// <summary>Added to (and overriding) the runner's child environment.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Environment { get; init; } = [];

    /// <summary>Ports that must accept TCP on 127.0.0.1 before the service counts as started.</summary>
    public required IReadOnlyList<int> ReadinessPorts { get; init; }

    public required TimeSpan StartTimeout { get; init; }

    public bool Noop => Argv.Count == 0;

    /// <summary>Backend.AI's wait for definitions and runtime apps.</summary>
    public static readonly TimeSpan AppStartTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Backend.AI's wait for the built-in sshd and ttyd.</summary>
    public static readonly TimeSpan BuiltInStartTimeout = TimeSpan.FromSeconds(10);
}
