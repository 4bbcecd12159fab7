namespace KataAgent.Network;

/// <summary>Base of everything CNI-related that failed: configuration, plugin lookup, plugin execution.</summary>
public class CniException : Exception
{
    public CniException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// A plugin failed. When it printed a CNI error object, <see cref="Code"/>, <see cref="CniMessage"/> and
/// <see cref="Details"/> carry it; otherwise <see cref="ExitCode"/> and <see cref="Stderr"/> tell what happened.
/// </summary>
public sealed class CniPluginException : CniException
{
    public CniPluginException(string plugin, CniCommand command, string message, int? code = null, string? cniMessage = null,
        string? details = null, int? exitCode = null, string? stderr = null, bool timedOut = false, Exception? inner = null)
        : base(message, inner)
    {
        Plugin = plugin;
        Command = command;
        Code = code;
        CniMessage = cniMessage;
        Details = details;
        ExitCode = exitCode;
        Stderr = stderr;
        TimedOut = timedOut;
    }

    public string Plugin { get; }
    public CniCommand Command { get; }
    /// <summary>The CNI error code (1–99 are the spec's, e.g. 1 incompatible version, 7 invalid config, 11 try again).</summary>
    public int? Code { get; }
    public string? CniMessage { get; }
    public string? Details { get; }
    public int? ExitCode { get; }
    public string? Stderr { get; }
    public bool TimedOut { get; }
}

/// <summary>No executable named after the plugin type exists in any configured plugin directory.</summary>
public sealed class CniPluginNotFoundException : CniException
{
    public CniPluginNotFoundException(string plugin, IReadOnlyList<string> directories)
        : base($"CNI plugin '{plugin}' not found in {string.Join(", ", directories)} (is containernetworking-plugins installed?)")
    {
        Plugin = plugin;
        Directories = directories;
    }

    public string Plugin { get; }
    public IReadOnlyList<string> Directories { get; }
}
