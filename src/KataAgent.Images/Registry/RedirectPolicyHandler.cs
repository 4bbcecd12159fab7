using System.Diagnostics.CodeAnalysis;
using System.Net;

namespace KataAgent.Images.Registry;

/// <summary>
/// Follows registry redirects itself, only where they may go: back to the host the request was for
/// (same scheme, host and port), or to https elsewhere (blob storage, CDNs). A redirect to plain http on
/// another host, or to a loopback address from a registry that is not itself on loopback, is refused
/// with a clear error — a registry must not steer the agent at services on the agent's own host.
/// At most <see cref="MaxRedirects"/> hops; GET and HEAD only (nothing else is redirected by registries).
/// The Authorization header never leaves the original host.
/// </summary>
public sealed class RedirectPolicyHandler(HttpMessageHandler inner) : DelegatingHandler(inner)
{
    public const int MaxRedirects = 5;

    [SuppressMessage("Reliability", "CA2000:Dispose objects before losing scope",
        Justification = "Each hop's request is disposed when the next one replaces it; the last one stays with its response (RequestMessage), as the caller's own does.")]
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var origin = request.RequestUri ?? throw new ArgumentException("the request has no URI", nameof(request));
        var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        if (request.Method != HttpMethod.Get && request.Method != HttpMethod.Head)
        {
            return response;
        }

        var current = request;
        for (var hop = 0; IsRedirect(response.StatusCode); hop++)
        {
            var location = response.Headers.Location;
            if (location is null)
            {
                return response;
            }

            var target = location.IsAbsoluteUri ? location : new Uri(current.RequestUri!, location);
            response.Dispose();
            if (hop >= MaxRedirects)
            {
                throw new HttpRequestException($"{origin.Authority} redirected more than {MaxRedirects} times (last to {Describe(target)})");
            }

            if (Refusal(origin, target) is { } why)
            {
                throw new HttpRequestException($"{origin.Authority} redirected to {Describe(target)}, which is refused: {why}");
            }

            var next = new HttpRequestMessage(current.Method, target) { Version = current.Version, VersionPolicy = current.VersionPolicy };
            foreach (var header in current.Headers)
            {
                if (header.Key.Equals("Authorization", StringComparison.OrdinalIgnoreCase) && !SameOrigin(origin, target))
                {
                    continue;
                }

                next.Headers.TryAddWithoutValidation(header.Key, header.Value);
            }

            if (!ReferenceEquals(current, request))
            {
                current.Dispose();
            }

            current = next;
            response = await base.SendAsync(current, cancellationToken).ConfigureAwait(false);
        }

        return response;
    }

    /// <summary>Why a redirect from <paramref name="origin"/> to <paramref name="target"/> may not be followed, or null.</summary>
    public static string? Refusal(Uri origin, Uri target)
    {
        if (SameOrigin(origin, target))
        {
            return null;
        }

        if (target.Scheme != Uri.UriSchemeHttps)
        {
            return "a redirect to another host must use https";
        }

        if (RegistryOptions.IsLoopback(target.Authority) && !RegistryOptions.IsLoopback(origin.Authority))
        {
            return "a registry that is not on loopback may not send the agent to a loopback address";
        }

        return null;
    }

    private static bool SameOrigin(Uri a, Uri b) =>
        a.Scheme == b.Scheme && a.Port == b.Port && string.Equals(a.Host, b.Host, StringComparison.OrdinalIgnoreCase);

    private static bool IsRedirect(HttpStatusCode status) => status is HttpStatusCode.MovedPermanently or HttpStatusCode.Found
        or HttpStatusCode.SeeOther or HttpStatusCode.TemporaryRedirect or HttpStatusCode.PermanentRedirect;

    // Signed blob URLs carry credentials in the query: name only where it went.
    private static string Describe(Uri uri) => uri.GetLeftPart(UriPartial.Path);
}
