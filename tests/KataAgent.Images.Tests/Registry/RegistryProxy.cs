using System.Collections.Concurrent;
using System.Net;
using System.Text.RegularExpressions;

namespace KataAgent.Images.Tests.Registry;

/// <summary>
/// A small HTTP proxy on 127.0.0.1 in front of a test registry (GET only, which is all a pull needs). It counts the blob
/// bytes it serves per digest and the Range requests it sees, and can misbehave: flip a byte in a blob, or stall a blob
/// after some bytes until released.
/// </summary>
public sealed partial class RegistryProxy : IAsyncDisposable
{
    private readonly HttpListener _listener = new();
    private readonly HttpClient _upstream;
    private readonly Uri _upstreamBase;
    private readonly Task _loop;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<string, long> _served = new();
    private readonly ConcurrentQueue<string> _requests = new();
    private volatile string? _corrupt;
    private volatile string? _stallDigest;
    private long _stallAfter;
    private TaskCompletionSource _stalled = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public RegistryProxy(string upstreamHost)
    {
        _upstreamBase = new Uri($"http://{upstreamHost}/");
        _upstream = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false, AutomaticDecompression = DecompressionMethods.None }) { Timeout = Timeout.InfiniteTimeSpan };
        for (var attempt = 0; ; attempt++)
        {
            Port = RegistryServer.FreePort();
            _listener.Prefixes.Clear();
            _listener.Prefixes.Add($"http://127.0.0.1:{Port}/");
            try
            {
                _listener.Start();
                break;
            }
            catch (HttpListenerException) when (attempt < 5)
            {
            }
        }

        _loop = Task.Run(LoopAsync);
    }

    public int Port { get; }

    public string Host => $"127.0.0.1:{Port}";

    /// <summary>Blob bytes served per digest since the last <see cref="Reset"/>.</summary>
    public IReadOnlyDictionary<string, long> Served => _served;

    public long ServedFor(string digest) => _served.GetValueOrDefault(digest);

    /// <summary>"METHOD path range" of every request since the last <see cref="Reset"/>.</summary>
    public IReadOnlyList<string> Requests => _requests.ToList();

    /// <summary>Serve this blob with one byte flipped.</summary>
    public void Corrupt(string? digest) => _corrupt = digest;

    /// <summary>Stop sending this blob once <paramref name="bytes"/> of it went out; <see cref="Stalled"/> completes then.</summary>
    public void StallAfter(string digest, long bytes)
    {
        _stallAfter = bytes;
        _stalled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _stallDigest = digest;
    }

    public Task Stalled => _stalled.Task;

    /// <summary>Clears counters and misbehaviour; a stalled response is released (its client has usually gone).</summary>
    public void Reset()
    {
        _stallDigest = null;
        _corrupt = null;
        _release.TrySetResult();
        _served.Clear();
        _requests.Clear();
    }

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (HttpListenerException)
            {
                continue;
            }

            _ = Task.Run(() => ServeAsync(context));
        }
    }

    private async Task ServeAsync(HttpListenerContext context)
    {
        var request = context.Request;
        var response = context.Response;
        try
        {
            var path = request.Url!.PathAndQuery;
            _requests.Enqueue($"{request.HttpMethod} {path} {request.Headers["Range"]}".TrimEnd());
            using var upstreamRequest = new HttpRequestMessage(new HttpMethod(request.HttpMethod), new Uri(_upstreamBase, path));
            foreach (var name in new[] { "Accept", "Range", "Authorization" })
            {
                if (request.Headers.GetValues(name) is { } values)
                {
                    upstreamRequest.Headers.TryAddWithoutValidation(name, values);
                }
            }

            using var upstream = await _upstream.SendAsync(upstreamRequest, HttpCompletionOption.ResponseHeadersRead, _stop.Token);
            response.StatusCode = (int)upstream.StatusCode;
            foreach (var (name, values) in upstream.Headers.Concat(upstream.Content.Headers))
            {
                if (name is "Content-Length" or "Transfer-Encoding" or "Connection" or "Keep-Alive" or "Date" or "Server")
                {
                    continue;
                }

                foreach (var value in values)
                {
                    response.AddHeader(name, name == "Location" ? value.Replace(_upstreamBase.Authority, Host, StringComparison.Ordinal) : value);
                }
            }

            var length = upstream.Content.Headers.ContentLength;
            if (length is { } known)
            {
                response.ContentLength64 = known;
            }
            else
            {
                response.SendChunked = true;
            }

            var blob = BlobPattern().Match(request.Url.AbsolutePath);
            var digest = blob.Success && request.HttpMethod == "GET" ? blob.Groups[1].Value : null;
            long offset = upstream.Content.Headers.ContentRange?.From ?? 0;
            await using var body = await upstream.Content.ReadAsStreamAsync(_stop.Token);
            var buffer = new byte[64 * 1024];
            long sent = 0;
            while (true)
            {
                var want = buffer.Length;
                if (digest is not null && digest == _stallDigest)
                {
                    var left = _stallAfter - (offset + sent);
                    if (left <= 0)
                    {
                        await response.OutputStream.FlushAsync();
                        _stalled.TrySetResult();
                        await _release.Task.WaitAsync(_stop.Token);
                        break; // drop the connection: the client has been cancelled meanwhile
                    }

                    want = (int)Math.Min(want, left);
                }

                var read = await body.ReadAsync(buffer.AsMemory(0, want), _stop.Token);
                if (read == 0)
                {
                    break;
                }

                if (digest is not null && digest == _corrupt)
                {
                    // flip a byte in the middle of every chunk
                    buffer[read / 2] ^= 0x5a;
                }

                await response.OutputStream.WriteAsync(buffer.AsMemory(0, read), _stop.Token);
                sent += read;
                if (digest is not null)
                {
                    _served.AddOrUpdate(digest, read, (_, total) => total + read);
                }
            }

            response.Close();
        }
        catch (Exception)
        {
            // the client went away (cancelled pull) or the proxy is stopping
            try
            {
                response.Abort();
            }
            catch (Exception)
            {
            }
        }
    }

    [GeneratedRegex(@"^/v2/.+/blobs/(sha256:[0-9a-f]{64})$")]
    private static partial Regex BlobPattern();

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _release.TrySetResult();
        _listener.Stop();
        _listener.Close();
        try
        {
            await _loop.WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception)
        {
        }

        _upstream.Dispose();
        _stop.Dispose();
    }
}
