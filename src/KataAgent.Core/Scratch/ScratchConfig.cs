using System.Text.Json.Nodes;

namespace KataAgent.Core.Scratch;

/// <summary>The kernel runner's ports inside the guest, written to intrinsic-ports.json.</summary>
public sealed record IntrinsicPorts(int ReplIn = 2000, int ReplOut = 2001);

/// <summary>A file placed in the work dir at create time (.bashrc and the like); <see cref="Path"/> is relative to /home/work.</summary>
public sealed record ScratchDotfile(string Path, string Content, UnixFileMode Mode);

/// <summary>What goes into /home/config (and the dotfiles into /home/work) when a session is created.</summary>
public sealed record ScratchConfig
{
    /// <summary>environ.txt: KEY=VALUE lines, the session's environment; no blank or comment lines.</summary>
    public IReadOnlyDictionary<string, string> Environ { get; init; } = new Dictionary<string, string>();

    /// <summary>resource.txt: KEY=VALUE lines (CID, SESSION_ID, slots, ...).</summary>
    public IReadOnlyDictionary<string, string> Resource { get; init; } = new Dictionary<string, string>();

    public IntrinsicPorts IntrinsicPorts { get; init; } = new();

    /// <summary>runner.json, passed through as given; not written when null.</summary>
    public JsonObject? Runner { get; init; }

    public IReadOnlyList<ScratchDotfile> Dotfiles { get; init; } = [];

    /// <summary>
    /// runner-curve.json, the runner's CURVE key pair (and the agent's public key), mode 0600 so that
    /// only root reads it, on the host and in the guest; not written when null.
    /// </summary>
    public string? RunnerCurveKeyFile { get; init; }
}
