using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace KataAgent.Images.Registry;

/// <summary>A manifest or index as the registry sent it: exact bytes (their sha256 is the digest) and media type.</summary>
public sealed record RegistryManifest(string MediaType, string Digest, byte[] Content)
{
    public OciDescriptor Descriptor => new() { MediaType = MediaType, Digest = Digest, Size = Content.Length };
}

/// <summary>An open blob download. <see cref="Offset"/> is where <see cref="Content"/> starts: the requested offset when the
/// registry honoured the Range request, 0 when it sent the whole blob.</summary>
public sealed class BlobDownload(HttpResponseMessage response, Stream content, long offset) : IAsyncDisposable
{
    public Stream Content { get; } = content;
    public long Offset { get; } = offset;

    public async ValueTask DisposeAsync()
    {
        await Content.DisposeAsync().ConfigureAwait(false);
        response.Dispose();
    }
}

/// <summary>How a blob is uploaded.</summary>
public enum BlobUploadMode
{
    /// <summary>Monolithic up to <see cref="PushOptions.MonolithicLimit"/>, chunked above.</summary>
    Auto,
    /// <summary>POST to open an upload, one PUT with the whole blob.</summary>
    Monolithic,
    /// <summary>POST, PATCH per chunk (Content-Range), PUT with the digest to close.</summary>
    Chunked,
}

/// <summary>Copies <paramref name="length"/> bytes of a blob from <paramref name="offset"/> to <paramref name="destination"/>.</summary>
public delegate Task BlobReader(long offset, long length, Stream destination, CancellationToken cancellationToken);

/// <summary>One repository on one registry endpoint: the v2 API calls a pull or push makes.</summary>
public sealed class RegistryRepository
{
    private const int MaxManifestSize = 4 * 1024 * 1024;

    internal static readonly string[] ManifestAccept = [MediaTypes.OciIndex, MediaTypes.DockerManifestList, MediaTypes.OciManifest, MediaTypes.DockerManifest];

    private readonly RegistryClient _client;
    private readonly string _scope;

    internal RegistryRepository(RegistryClient client, RegistryEndpoint endpoint, string name, bool push)
    {
        _client = client;
        Endpoint = endpoint;
        Name = name;
        _scope = $"repository:{name}:" + (push ? "pull,push" : "pull");
    }

    public RegistryEndpoint Endpoint { get; }

    /// <summary>host[:port] of the endpoint (a mirror's own host for a mirror).</summary>
    public string Registry => Endpoint.Host;

    /// <summary>Repository path (<c>library/python</c>).</summary>
    public string Name { get; }

    public override string ToString() => $"{Registry}/{Name}";

    private Uri Url(string path) => new(Endpoint.BaseUri, $"v2/{Name}/{path}");

    // ---------------------------------------------------------------- manifests

    /// <summary>Fetches a manifest or index by tag or digest. Its bytes are checked against the digest asked for (and against
    /// the registry's Docker-Content-Digest header when it sends one).</summary>
    public async Task<RegistryManifest> GetManifestAsync(string reference, CancellationToken cancellationToken = default)
    {
        var what = $"fetching manifest {this}:{reference}";
        using var response = await SendAsync(() =>
        {
            var request = new HttpRequestMessage(HttpMethod.Get, Url("manifests/" + reference));
            foreach (var accept in ManifestAccept)
            {
                request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(accept));
            }

            return request;
        }, what, cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw await RegistryClient.ErrorAsync(Endpoint, response, what, cancellationToken).ConfigureAwait(false);
        }

        byte[] body;
        try
        {
            body = await RegistryClient.ReadLimitedAsync(response.Content, MaxManifestSize, cancellationToken).ConfigureAwait(false);
        }
        catch (InvalidDataException e)
        {
            throw new RegistryException(Registry, $"{what}: {e.Message}");
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
            throw new RegistryUnavailableException(Registry, $"{what}: the connection broke while reading the manifest: {e.Message}", null, e);
        }

        var digest = OciDigest.Compute(body);
        if (OciDigest.IsValid(reference) && reference != digest)
        {
            throw new BlobDigestMismatchException(Registry, reference, $"{what}: the registry sent a manifest whose sha256 is {digest}, not the digest asked for");
        }

        if (response.Headers.TryGetValues("Docker-Content-Digest", out var values) && values.FirstOrDefault() is { } header && OciDigest.IsValid(header) && header != digest)
        {
            throw new BlobDigestMismatchException(Registry, header, $"{what}: the registry says the manifest is {header}, but the bytes it sent hash to {digest}");
        }

        var mediaType = response.Content.Headers.ContentType?.MediaType;
        if (mediaType is null || !(MediaTypes.IsIndex(mediaType) || MediaTypes.IsManifest(mediaType)))
        {
            mediaType = SniffMediaType(body) ?? mediaType;
        }

        if (mediaType is null || !(MediaTypes.IsIndex(mediaType) || MediaTypes.IsManifest(mediaType)))
        {
            var hint = mediaType?.Contains("v1+", StringComparison.Ordinal) == true || mediaType?.Contains("prettyjws", StringComparison.Ordinal) == true
                ? " (Docker schema 1 manifests are not supported)" : "";
            throw new RegistryException(Registry, $"{what}: unsupported manifest media type '{mediaType}'{hint}");
        }

        return new RegistryManifest(mediaType, digest, body);
    }

    private static string? SniffMediaType(byte[] body)
    {
        try
        {
            using var json = JsonDocument.Parse(body);
            var root = json.RootElement;
            if (root.TryGetProperty("mediaType", out var mediaType) && mediaType.GetString() is { } declared)
            {
                return declared;
            }

            if (root.TryGetProperty("manifests", out _))
            {
                return MediaTypes.OciIndex;
            }

            return root.TryGetProperty("config", out _) && root.TryGetProperty("layers", out _) ? MediaTypes.OciManifest : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>Puts a manifest or index under a tag or its digest; returns the digest the registry stored it as.</summary>
    public async Task<string> PutManifestAsync(string reference, string mediaType, byte[] content, CancellationToken cancellationToken = default)
    {
        var what = $"putting manifest {this}:{reference}";
        using var response = await SendAsync(() =>
        {
            var body = new ByteArrayContent(content);
            body.Headers.ContentType = new MediaTypeHeaderValue(mediaType);
            return new HttpRequestMessage(HttpMethod.Put, Url("manifests/" + reference)) { Content = body };
        }, what, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode is not (HttpStatusCode.Created or HttpStatusCode.OK or HttpStatusCode.Accepted))
        {
            throw await RegistryClient.ErrorAsync(Endpoint, response, what, cancellationToken).ConfigureAwait(false);
        }

        var digest = OciDigest.Compute(content);
        if (response.Headers.TryGetValues("Docker-Content-Digest", out var values) && values.FirstOrDefault() is { } stored && stored != digest)
        {
            throw new RegistryException(Registry, $"{what}: the registry stored the manifest as {stored}, but it is {digest}");
        }

        return digest;
    }

    // ---------------------------------------------------------------- blobs

    /// <summary>True when the registry has the blob (HEAD).</summary>
    public async Task<bool> BlobExistsAsync(string digest, CancellationToken cancellationToken = default)
    {
        var what = $"checking blob {digest} in {this}";
        using var response = await SendAsync(() => new HttpRequestMessage(HttpMethod.Head, Url("blobs/" + digest)), what, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return false;
        }

        if (!response.IsSuccessStatusCode)
        {
            throw await RegistryClient.ErrorAsync(Endpoint, response, what, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    /// <summary>Opens a blob for download from <paramref name="offset"/> (a Range request when above 0).</summary>
    public async Task<BlobDownload> OpenBlobAsync(string digest, long offset = 0, CancellationToken cancellationToken = default)
    {
        var what = $"downloading blob {digest} from {this}";
        var response = await SendAsync(() =>
        {
            var request = new HttpRequestMessage(HttpMethod.Get, Url("blobs/" + digest));
            if (offset > 0)
            {
                request.Headers.Range = new RangeHeaderValue(offset, null);
            }

            return request;
        }, what, cancellationToken).ConfigureAwait(false);
        try
        {
            long start;
            if (response.StatusCode == HttpStatusCode.PartialContent)
            {
                start = response.Content.Headers.ContentRange?.From
                    ?? throw new RegistryException(Registry, $"{what}: 206 Partial Content without a Content-Range");
                if (start != offset)
                {
                    throw new RegistryException(Registry, $"{what}: asked for bytes from {offset}, the registry sent from {start}");
                }
            }
            else if (response.StatusCode == HttpStatusCode.OK)
            {
                start = 0;
            }
            else
            {
                throw await RegistryClient.ErrorAsync(Endpoint, response, what, cancellationToken).ConfigureAwait(false);
            }

            var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            return new BlobDownload(response, stream, start);
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

    /// <summary>Uploads a blob whose bytes <paramref name="read"/> supplies; the registry checks the digest when the upload closes.</summary>
    /// <param name="onBytes">told about every piece of the body sent (for progress)</param>
    public async Task UploadBlobAsync(OciDescriptor blob, BlobReader read, BlobUploadMode mode, long chunkSize, Action<long>? onBytes = null,
        CancellationToken cancellationToken = default)
    {
        if (chunkSize < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(chunkSize), chunkSize, "chunk size must be positive");
        }

        var what = $"uploading blob {blob.Digest} ({blob.Size} bytes) to {this}";
        var location = await StartUploadAsync(what, cancellationToken).ConfigureAwait(false);
        if (mode == BlobUploadMode.Chunked)
        {
            long offset = 0;
            while (offset < blob.Size)
            {
                var start = offset;
                var length = Math.Min(chunkSize, blob.Size - offset);
                var chunkUrl = location;
                using var patched = await SendAsync(() =>
                {
                    var content = new BlobContent(read, start, length, onBytes);
                    content.Headers.TryAddWithoutValidation("Content-Range", $"{start}-{start + length - 1}");
                    return new HttpRequestMessage(HttpMethod.Patch, chunkUrl) { Content = content };
                }, what, cancellationToken).ConfigureAwait(false);
                if (patched.StatusCode != HttpStatusCode.Accepted)
                {
                    throw await RegistryClient.ErrorAsync(Endpoint, patched, $"{what}: chunk at {start}", cancellationToken).ConfigureAwait(false);
                }

                location = NextLocation(patched, location, what);
                offset += length;
            }

            await CloseUploadAsync(location, blob, () => new ByteArrayContent([]), what, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await CloseUploadAsync(location, blob, () => new BlobContent(read, 0, blob.Size, onBytes), what, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<Uri> StartUploadAsync(string what, CancellationToken cancellationToken)
    {
        using var response = await SendAsync(() => new HttpRequestMessage(HttpMethod.Post, Url("blobs/uploads/")) { Content = new ByteArrayContent([]) },
            what, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode != HttpStatusCode.Accepted)
        {
            throw await RegistryClient.ErrorAsync(Endpoint, response, what + ": starting the upload", cancellationToken).ConfigureAwait(false);
        }

        return NextLocation(response, null, what);
    }

    private async Task CloseUploadAsync(Uri location, OciDescriptor blob, Func<HttpContent> content, string what, CancellationToken cancellationToken)
    {
        var separator = string.IsNullOrEmpty(location.Query) ? "?" : "&";
        var url = new Uri(location.AbsoluteUri + separator + "digest=" + Uri.EscapeDataString(blob.Digest));
        using var response = await SendAsync(() => new HttpRequestMessage(HttpMethod.Put, url) { Content = content() }, what, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode is not (HttpStatusCode.Created or HttpStatusCode.NoContent or HttpStatusCode.OK))
        {
            var error = await RegistryClient.ErrorAsync(Endpoint, response, what, cancellationToken).ConfigureAwait(false);
            if (error.ErrorCodes.Contains("DIGEST_INVALID") || error.ErrorCodes.Contains("SIZE_INVALID"))
            {
                throw new BlobDigestMismatchException(Registry, blob.Digest, $"{what}: the registry says the uploaded bytes do not match the digest: {error.Message}");
            }

            throw error;
        }
    }

    private Uri NextLocation(HttpResponseMessage response, Uri? current, string what)
    {
        var location = response.Headers.Location;
        if (location is null)
        {
            return current ?? throw new RegistryException(Registry, $"{what}: the registry sent no upload Location");
        }

        return location.IsAbsoluteUri ? location : new Uri(Endpoint.BaseUri, location);
    }

    // ---------------------------------------------------------------- transport

    /// <summary>Sends a request, answering authentication challenges (the request is made anew for each try).</summary>
    internal async Task<HttpResponseMessage> SendAsync(Func<HttpRequestMessage> make, string what, CancellationToken cancellationToken)
    {
        var authorization = _client.CachedAuthorization(Endpoint, _scope);
        for (var attempt = 0; ; attempt++)
        {
            var request = make();
            request.Headers.Authorization = authorization;
            HttpResponseMessage response;
            using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                timeout.CancelAfter(_client.Options.RequestTimeout);
                try
                {
                    response = await _client.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
                }
                catch (HttpRequestException e)
                {
                    throw new RegistryUnavailableException(Registry, $"{what}: cannot reach registry {Registry} at {Endpoint.BaseUri}: {e.Message}", null, e);
                }
                catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new RegistryUnavailableException(Registry, $"{what}: registry {Registry} did not answer within {_client.Options.RequestTimeout.TotalSeconds:0} s", null, e);
                }
            }

            if (response.StatusCode != HttpStatusCode.Unauthorized)
            {
                return response;
            }

            var challenges = response.Headers.TryGetValues("WWW-Authenticate", out var values)
                ? values.SelectMany(AuthChallenge.Parse).ToList()
                : [];
            response.Dispose();
            if (attempt >= 2)
            {
                throw new RegistryAuthenticationException(Registry, $"{what}: registry {Registry} keeps answering 401 Unauthorized", HttpStatusCode.Unauthorized);
            }

            _client.Logger.LogDebug("{What}: 401 from {Registry}, challenges {Challenges}", what, Registry, string.Join(", ", challenges.Select(c => c.Scheme)));
            authorization = await _client.AuthorizeAsync(Endpoint, challenges, _scope, authorization, what, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>A request body streamed from a <see cref="BlobReader"/>, with a known length.</summary>
    private sealed class BlobContent : HttpContent
    {
        private readonly BlobReader _read;
        private readonly long _offset;
        private readonly long _length;
        private readonly Action<long>? _onBytes;

        public BlobContent(BlobReader read, long offset, long length, Action<long>? onBytes)
        {
            _read = read;
            _offset = offset;
            _length = length;
            _onBytes = onBytes;
            Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
            Headers.ContentLength = length;
        }

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            if (_length == 0)
            {
                return;
            }

            var counting = new CountingStream(stream, _onBytes);
            await using var countingDisposal = counting.ConfigureAwait(false);
            await _read(_offset, _length, counting, cancellationToken).ConfigureAwait(false);
            if (counting.Count != _length)
            {
                throw new IOException($"the blob reader supplied {counting.Count} bytes where {_length} were expected");
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = _length;
            return true;
        }
    }

    /// <summary>Write-only pass-through that counts (and reports) what goes by; disposing it leaves the inner stream open.</summary>
    private sealed class CountingStream(Stream inner, Action<long>? onBytes) : Stream
    {
        public long Count { get; private set; }
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => Count; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count)
        {
            inner.Write(buffer, offset, count);
            Count += count;
            onBytes?.Invoke(count);
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await inner.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
            Count += buffer.Length;
            onBytes?.Invoke(buffer.Length);
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
            => WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    }
}
