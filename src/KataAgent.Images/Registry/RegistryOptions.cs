using System.Net;

namespace KataAgent.Images.Registry;

/// <summary>Settings for one registry, keyed in <see cref="RegistryOptions.Hosts"/> by its host[:port] as written in image references.</summary>
public sealed record RegistryHostOptions
{
    /// <summary>User name for basic auth, or for the token service of a bearer-token registry.</summary>
    public string? Username { get; init; }

    public string? Password { get; init; }

    /// <summary>Speak plain HTTP instead of HTTPS. Null: plain HTTP for loopback registries (localhost, 127.0.0.0/8, ::1) only.</summary>
    public bool? PlainHttp { get; init; }

    /// <summary>Accept any TLS certificate (self-signed test registries). Off by default.</summary>
    public bool SkipTlsVerify { get; init; }

    /// <summary>
    /// Mirrors tried, in order, before the registry itself when pulling (never for push): <c>host[:port]</c>,
    /// <c>http://host:port</c> or <c>https://host/prefix</c>. A mirror serves the same repository names under
    /// <c>/v2/</c>; its own credentials and settings come from its own entry in <see cref="RegistryOptions.Hosts"/>.
    /// </summary>
    public IReadOnlyList<string> Mirrors { get; init; } = [];

    /// <summary>Where the registry's API is when it is not at its own host (docker.io: registry-1.docker.io).</summary>
    public string? Endpoint { get; init; }
}

/// <summary>Registry access settings: per-registry credentials and transport, and transfer tuning. The agent config fills it.</summary>
public sealed record RegistryOptions
{
    /// <summary>Per-registry settings keyed by host[:port] (<c>docker.io</c>, <c>127.0.0.1:5000</c>).</summary>
    public IReadOnlyDictionary<string, RegistryHostOptions> Hosts { get; init; } = new Dictionary<string, RegistryHostOptions>();

    /// <summary>Blobs transferred at once, per pull or push.</summary>
    public int MaxConcurrentTransfers { get; init; } = 3;

    /// <summary>Timeout for a request to answer with its headers (body streaming is not limited by it).</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>A blob download that delivers no byte for this long fails (and can be resumed).</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(60);

    public string UserAgent { get; init; } = "kata-agent/1.0";

    /// <summary>The settings for a host, or defaults when it has no entry.</summary>
    public RegistryHostOptions For(string host) => Hosts.TryGetValue(host, out var options) ? options : new RegistryHostOptions();

    /// <summary>True for localhost and loopback addresses, with or without a port.</summary>
    public static bool IsLoopback(string host)
    {
        var name = host;
        if (name.StartsWith('['))
        {
            var close = name.IndexOf(']', StringComparison.Ordinal);
            name = close > 0 ? name[1..close] : name;
        }
        else if (name.IndexOf(':', StringComparison.Ordinal) is var colon and > 0)
        {
            name = name[..colon];
        }

        return name.Equals("localhost", StringComparison.OrdinalIgnoreCase) || (IPAddress.TryParse(name, out var address) && IPAddress.IsLoopback(address));
    }
}
