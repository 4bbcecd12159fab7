namespace KataAgent.Images;

/// <summary>What goes into the debootstrap-based <c>python</c> session image.</summary>
public sealed record PythonImageSpec
{
    public string ImageName { get; init; } = "kata-agent/python:3-bookworm";

    public string Suite { get; init; } = "bookworm";

    public string Variant { get; init; } = "minbase";

    /// <summary>The full python3 package: the runner's driver needs json, rlcompleter and friends, which python3-minimal lacks.</summary>
    public IReadOnlyList<string> Packages { get; init; } = ["python3"];

    /// <summary>Debian mirror; null reads the host's configured mirror for <see cref="Suite"/> from /etc/apt. Not part of the cache key.</summary>
    public string? Mirror { get; init; }

    /// <summary>Keyring for debootstrap; null uses the Signed-By of the host's source, else debootstrap's default.</summary>
    public string? Keyring { get; init; }

    public string BaseDistro { get; init; } = "debian12";

    public IReadOnlyList<string> Env { get; init; } =
    [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG=C.UTF-8",
        "PYTHONUNBUFFERED=1",
    ];

    public IReadOnlyList<string> Cmd { get; init; } = ["/bin/sh"];

    public string WorkingDir { get; init; } = "/home/work";

    /// <summary>The Backend.AI kernel-spec labels; <see cref="BaseDistro"/> fills <c>ai.backend.base-distro</c>.</summary>
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>
    {
        ["ai.backend.kernelspec"] = "1",
        ["ai.backend.runtime-type"] = "python",
        ["ai.backend.runtime-path"] = "/usr/bin/python3",
        ["ai.backend.features"] = "query batch uid-match user-input",
    };

    /// <summary>Longest debootstrap may run.</summary>
    public TimeSpan DebootstrapTimeout { get; init; } = TimeSpan.FromMinutes(15);
}

/// <summary>What goes into the tiny busybox test image.</summary>
public sealed record BusyboxImageSpec
{
    public string ImageName { get; init; } = "kata-agent/busybox:latest";

    /// <summary>A statically linked busybox (Debian's busybox-static installs /bin/busybox).</summary>
    public string BusyboxPath { get; init; } = "/bin/busybox";

    public IReadOnlyList<string> Env { get; init; } = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"];

    public IReadOnlyList<string> Cmd { get; init; } = ["/bin/sh"];

    public string WorkingDir { get; init; } = "/home/work";

    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>
    {
        ["ai.backend.base-distro"] = "busybox",
    };
}
