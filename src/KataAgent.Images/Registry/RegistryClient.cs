using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Images.Registry;

/// <summary>Where a registry (or a mirror of it) answers: the key its settings are under, and its API base.</summary>
/// <param name="Host">host[:port]: the key in <see cref="RegistryOptions.Hosts"/> and the name errors use</param>
/// <param name="BaseUri">scheme://authority/[prefix/]; requests go to BaseUri + "v2/..."</param>
/// <param name="IsMirror">a pull mirror rather than the registry itself</param>
public sealed record RegistryEndpoint(string Host, Uri BaseUri, bool IsMirror);

/// <summary>
/// Client for the registry HTTP API v2 (distribution spec): manifests, blobs, uploads. Authenticates as registries ask
/// (WWW-Authenticate): anonymously, with basic auth, or with bearer tokens from the named realm (service and scope
/// passed on), using the credentials configured for the registry. Tokens are cached per registry and scope until they
/// expire. One instance serves many pulls and pushes; it is thread-safe.
/// </summary>
public sealed class RegistryClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, (AuthenticationHeaderValue Header, DateTimeOffset Expires)> _tokens = new();
    private readonly ConcurrentDictionary<string, AuthenticationHeaderValue> _basic = new();

    /// <summary>Largest token-service answer read; real ones are a few KiB.</summary>
    public const int MaxTokenResponseBytes = 64 * 1024;

    [SuppressMessage("Reliability", "CA2000:Dispose objects before losing scope", Justification = "The handlers belong to _http (disposeHandler: true), which Dispose disposes.")]
    public RegistryClient(RegistryOptions? options = null, ILogger? logger = null, HttpMessageHandler? handler = null)
    {
        Options = options ?? new RegistryOptions();
        _logger = logger ?? NullLogger.Instance;
        handler ??= new SocketsHttpHandler
        {
            // Redirects are followed by RedirectPolicyHandler, which checks where each one goes.
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            ConnectTimeout = TimeSpan.FromSeconds(30),
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            SslOptions = new System.Net.Security.SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (sender, _, _, errors) =>
                    errors == System.Net.Security.SslPolicyErrors.None
                    || (sender is System.Net.Security.SslStream ssl && SkipsTlsVerify(ssl.TargetHostName)),
            },
        };
        _http = new HttpClient(new RedirectPolicyHandler(handler), disposeHandler: true) { Timeout = Timeout.InfiniteTimeSpan };
        _http.DefaultRequestHeaders.UserAgent.ParseAdd(Options.UserAgent);
    }

    public RegistryOptions Options { get; }

    internal ILogger Logger => _logger;

    internal HttpClient Http => _http;

    /// <summary>The registry of <paramref name="reference"/> itself (for push, and as the last pull source).</summary>
    public RegistryRepository Repository(ImageReference reference, bool push = false)
        => new(this, Endpoint(reference.Registry), reference.Repository, push);

    /// <summary>Where a pull of <paramref name="reference"/> looks, in order: the registry's mirrors, then the registry.</summary>
    public IReadOnlyList<RegistryRepository> PullSources(ImageReference reference)
    {
        var sources = new List<RegistryRepository>();
        foreach (var mirror in Options.For(reference.Registry).Mirrors)
        {
            sources.Add(new RegistryRepository(this, MirrorEndpoint(reference.Registry, mirror), reference.Repository, push: false));
        }

        sources.Add(Repository(reference));
        return sources;
    }

    /// <summary>The API endpoint of a registry host (docker.io answers at registry-1.docker.io).</summary>
    public RegistryEndpoint Endpoint(string host)
    {
        var options = Options.For(host);
        if (options.Endpoint is { } endpoint)
        {
            if (endpoint.Contains("://", StringComparison.Ordinal))
            {
                return new RegistryEndpoint(host, WithTrailingSlash(new Uri(endpoint)), false);
            }

            return new RegistryEndpoint(host, new Uri($"{Scheme(host, options)}://{endpoint.TrimEnd('/')}/"), false);
        }

        var authority = host == ImageReference.DockerHub ? "registry-1.docker.io" : host;
        return new RegistryEndpoint(host, new Uri($"{Scheme(host, options)}://{authority}/"), false);
    }

    private RegistryEndpoint MirrorEndpoint(string registry, string mirror)
    {
        if (mirror.Contains("://", StringComparison.Ordinal))
        {
            if (!Uri.TryCreate(mirror, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            {
                throw new ArgumentException($"mirror '{mirror}' of registry {registry} is not an http(s) URL");
            }

            return new RegistryEndpoint(uri.Authority, WithTrailingSlash(uri), true);
        }

        var slash = mirror.IndexOf('/', StringComparison.Ordinal);
        var host = slash < 0 ? mirror : mirror[..slash];
        var prefix = slash < 0 ? "" : mirror[(slash + 1)..].Trim('/');
        if (!Uri.TryCreate($"{Scheme(host, Options.For(host))}://{host}/{prefix}", UriKind.Absolute, out var built))
        {
            throw new ArgumentException($"mirror '{mirror}' of registry {registry} is not host[:port][/prefix]");
        }

        return new RegistryEndpoint(host, WithTrailingSlash(built), true);
    }

    private static string Scheme(string host, RegistryHostOptions options)
        => options.PlainHttp ?? RegistryOptions.IsLoopback(host) ? "http" : "https";

    private static Uri WithTrailingSlash(Uri uri) => uri.AbsoluteUri.EndsWith('/') ? uri : new Uri(uri.AbsoluteUri + "/");

    private bool SkipsTlsVerify(string host)
        => Options.Hosts.Any(kv => kv.Value.SkipTlsVerify && (kv.Key == host || kv.Key.StartsWith(host + ":", StringComparison.OrdinalIgnoreCase)));

    // ---------------------------------------------------------------- auth

    /// <summary>The authorization to send first: a cached token for the scope, else basic credentials the registry asked for before.</summary>
    internal AuthenticationHeaderValue? CachedAuthorization(RegistryEndpoint endpoint, string scope)
    {
        if (_tokens.TryGetValue(endpoint.Host + " " + scope, out var token) && token.Expires > DateTimeOffset.UtcNow)
        {
            return token.Header;
        }

        return _basic.TryGetValue(endpoint.Host, out var basic) ? basic : null;
    }

    /// <summary>Answers a 401: returns the authorization to retry with, or throws naming why there is none.</summary>
    internal async Task<AuthenticationHeaderValue> AuthorizeAsync(RegistryEndpoint endpoint, IReadOnlyList<AuthChallenge> challenges, string scope,
        AuthenticationHeaderValue? rejected, string what, CancellationToken cancellationToken)
    {
        var options = Options.For(endpoint.Host);
        var hasCredentials = options.Username is not null;
        var user = options.Username;
        if (challenges.FirstOrDefault(c => c.IsBearer) is { } bearer)
        {
            if (rejected is { Scheme: "Bearer" })
            {
                var reason = bearer.Error is { } error ? $" ({error})" : "";
                throw new RegistryAuthenticationException(endpoint.Host, hasCredentials
                    ? $"{what}: registry {endpoint.Host} refused the token issued to user '{user}' for {scope}{reason}: access denied"
                    : $"{what}: registry {endpoint.Host} refused anonymous access to {scope}{reason}; configure credentials for {endpoint.Host}", HttpStatusCode.Unauthorized);
            }

            return await FetchTokenAsync(endpoint, bearer, scope, options, what, cancellationToken).ConfigureAwait(false);
        }

        if (challenges.FirstOrDefault(c => c.IsBasic) is not null)
        {
            if (!hasCredentials)
            {
                throw new RegistryAuthenticationException(endpoint.Host,
                    $"{what}: registry {endpoint.Host} requires credentials (basic auth) and none are configured for it", HttpStatusCode.Unauthorized);
            }

            if (rejected is { Scheme: "Basic" })
            {
                _basic.TryRemove(endpoint.Host, out _);
                throw new RegistryAuthenticationException(endpoint.Host,
                    $"{what}: registry {endpoint.Host} rejected the credentials of user '{user}' (wrong user name or password?)", HttpStatusCode.Unauthorized);
            }

            var header = BasicHeader(options);
            _basic[endpoint.Host] = header;
            return header;
        }

        var offered = challenges.Count == 0 ? "no WWW-Authenticate challenge" : "challenges " + string.Join(", ", challenges.Select(c => c.Scheme));
        throw new RegistryAuthenticationException(endpoint.Host, $"{what}: registry {endpoint.Host} answered 401 Unauthorized with {offered}; only Basic and Bearer are supported",
            HttpStatusCode.Unauthorized);
    }

    private static AuthenticationHeaderValue BasicHeader(RegistryHostOptions options)
        => new("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{options.Username}:{options.Password}")));

    private async Task<AuthenticationHeaderValue> FetchTokenAsync(RegistryEndpoint endpoint, AuthChallenge challenge, string scope, RegistryHostOptions options,
        string what, CancellationToken cancellationToken)
    {
        if (challenge.Realm is not { Length: > 0 } realm || !Uri.TryCreate(realm, UriKind.Absolute, out var realmUri) || realmUri.Scheme is not ("http" or "https"))
        {
            throw new RegistryAuthenticationException(endpoint.Host, $"{what}: registry {endpoint.Host} asks for a bearer token but names no usable realm ('{challenge.Realm}')");
        }

        if (RealmRefusal(endpoint, realmUri) is { } refusal)
        {
            throw new RegistryAuthenticationException(endpoint.Host,
                $"{what}: registry {endpoint.Host} names the token realm {realmUri.GetLeftPart(UriPartial.Path)}, which is refused: {refusal}");
        }

        // the registry's scope wins when it names one (it may ask for more than we would, e.g. pull,push)
        var tokenScope = challenge.Scope ?? scope;
        var query = new StringBuilder();
        if (challenge.Service is { } service)
        {
            query.Append("service=").Append(Uri.EscapeDataString(service));
        }

        foreach (var s in tokenScope.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            query.Append(query.Length > 0 ? "&" : "").Append("scope=").Append(Uri.EscapeDataString(s));
        }

        var builder = new UriBuilder(realmUri);
        builder.Query = string.IsNullOrEmpty(builder.Query) ? query.ToString() : builder.Query.TrimStart('?') + "&" + query;
        using var request = new HttpRequestMessage(HttpMethod.Get, builder.Uri);
        if (options.Username is not null)
        {
            request.Headers.Authorization = BasicHeader(options);
        }

        HttpResponseMessage response;
        using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
        {
            timeout.CancelAfter(Options.RequestTimeout);
            try
            {
                // Headers only: the body is read below with a size limit, never buffered whole.
                response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
            }
            catch (HttpRequestException e)
            {
                throw new RegistryUnavailableException(endpoint.Host, $"{what}: cannot reach the token service {realmUri.GetLeftPart(UriPartial.Path)} of registry {endpoint.Host}: {e.Message}", null, e);
            }
            catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
            {
                throw new RegistryUnavailableException(endpoint.Host, $"{what}: the token service {realmUri.GetLeftPart(UriPartial.Path)} of registry {endpoint.Host} did not answer within {Options.RequestTimeout.TotalSeconds:0} s", null, e);
            }
        }

        using (response)
        {
            if (response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
            {
                throw new RegistryAuthenticationException(endpoint.Host, options.Username is not null
                    ? $"{what}: the token service of registry {endpoint.Host} rejected the credentials of user '{options.Username}' (wrong user name or password?)"
                    : $"{what}: the token service of registry {endpoint.Host} refuses anonymous tokens for {tokenScope}; configure credentials for {endpoint.Host}",
                    response.StatusCode);
            }

            if (!response.IsSuccessStatusCode)
            {
                throw new RegistryAuthenticationException(endpoint.Host,
                    $"{what}: the token service of registry {endpoint.Host} answered {(int)response.StatusCode} {response.ReasonPhrase}", response.StatusCode);
            }

            string token;
            var expiresIn = 60;
            try
            {
                using var json = JsonDocument.Parse(await ReadLimitedAsync(response.Content, MaxTokenResponseBytes, cancellationToken).ConfigureAwait(false));
                var root = json.RootElement;
                token = (root.TryGetProperty("token", out var t) && t.GetString() is { Length: > 0 } tokenValue ? tokenValue
                    : root.TryGetProperty("access_token", out var a) && a.GetString() is { Length: > 0 } accessValue ? accessValue : null)
                    ?? throw new JsonException("neither 'token' nor 'access_token' is set");
                if (root.TryGetProperty("expires_in", out var e) && e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out var seconds) && seconds > 0)
                {
                    expiresIn = seconds;
                }
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException or InvalidDataException)
            {
                throw new RegistryAuthenticationException(endpoint.Host, $"{what}: the token service of registry {endpoint.Host} sent an unusable answer: {e.Message}", null, null, e);
            }

            var header = new AuthenticationHeaderValue("Bearer", token);
            _tokens[endpoint.Host + " " + scope] = (header, DateTimeOffset.UtcNow.AddSeconds(Math.Max(5, expiresIn - 10)));
            return header;
        }
    }

    /// <summary>
    /// Why a bearer realm may not be asked for a token, or null. Credentials go to the realm, so it must be
    /// https — plain http only where a pull would use it too (a loopback registry, or a host configured
    /// plain_http) — and a registry that is not on loopback may not send the agent to a loopback address.
    /// </summary>
    internal string? RealmRefusal(RegistryEndpoint endpoint, Uri realm)
    {
        var registryIsLoopback = RegistryOptions.IsLoopback(endpoint.BaseUri.Authority);
        if (RegistryOptions.IsLoopback(realm.Authority) && !registryIsLoopback)
        {
            return "a registry that is not on loopback may not name a loopback token service";
        }

        if (realm.Scheme == Uri.UriSchemeHttps)
        {
            return null;
        }

        return Scheme(realm.Authority, Options.For(realm.Authority)) == "http"
            ? null
            : "a token service must use https (plain http only for loopback registries or hosts configured with plain_http)";
    }

    // ---------------------------------------------------------------- errors

    /// <summary>The exception for a failed response: the registry's error codes and messages, classified by status.</summary>
    internal static async Task<RegistryException> ErrorAsync(RegistryEndpoint endpoint, HttpResponseMessage response, string what, CancellationToken cancellationToken)
    {
        var codes = new List<string>();
        var details = "";
        try
        {
            var body = await ReadLimitedAsync(response.Content, 64 * 1024, cancellationToken).ConfigureAwait(false);
            if (body.Length > 0)
            {
                try
                {
                    using var json = JsonDocument.Parse(body);
                    if (json.RootElement.TryGetProperty("errors", out var errors) && errors.ValueKind == JsonValueKind.Array)
                    {
                        var parts = new List<string>();
                        foreach (var error in errors.EnumerateArray())
                        {
                            var code = error.TryGetProperty("code", out var c) ? c.GetString() : null;
                            var message = error.TryGetProperty("message", out var m) ? m.GetString() : null;
                            if (code is not null)
                            {
                                codes.Add(code);
                            }

                            parts.Add(string.Join(": ", new[] { code, message }.Where(s => !string.IsNullOrEmpty(s))));
                        }

                        details = string.Join("; ", parts);
                    }
                }
                catch (JsonException)
                {
                    details = Encoding.UTF8.GetString(body.AsSpan(0, Math.Min(body.Length, 300))).Trim();
                }
            }
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
            details = "(error body unreadable: " + e.Message + ")";
        }

        var status = $"{(int)response.StatusCode} {response.ReasonPhrase}";
        var text = $"{what}: registry {endpoint.Host} answered {status}" + (details.Length > 0 ? $" ({details})" : "");
        return response.StatusCode switch
        {
            HttpStatusCode.NotFound => new RegistryNotFoundException(endpoint.Host, text, response.StatusCode, codes),
            HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden => new RegistryAuthenticationException(endpoint.Host, text, response.StatusCode, codes),
            HttpStatusCode.TooManyRequests or >= HttpStatusCode.InternalServerError => new RegistryUnavailableException(endpoint.Host, text, response.StatusCode),
            _ => new RegistryException(endpoint.Host, text, response.StatusCode, codes),
        };
    }

    internal static async Task<byte[]> ReadLimitedAsync(HttpContent content, int limit, CancellationToken cancellationToken)
    {
        var stream = await content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        await using var streamDisposal = stream.ConfigureAwait(false);
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        while (true)
        {
            var read = await stream.ReadAsync(chunk, cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                return buffer.ToArray();
            }

            if (buffer.Length + read > limit)
            {
                throw new InvalidDataException($"response body is larger than {limit} bytes");
            }

            await buffer.WriteAsync(chunk.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
        }
    }

    public void Dispose() => _http.Dispose();
}
