using System.Net;
using System.Text;
using KataAgent.Images.Registry;

namespace KataAgent.Images.Tests.Registry;

/// <summary>
/// A registry is untrusted input too: its token service answer is read with a size limit, its realm must
/// be https (http only where a pull would use it: loopback or plain_http hosts) and may not point a
/// remote registry at loopback, and its redirects go only to its own host or to https elsewhere.
/// The HTTP side runs against a small server on 127.0.0.1 made here.
/// </summary>
public sealed class RegistryBoundsTests
{
    private static CancellationToken Limit() => new CancellationTokenSource(TimeSpan.FromSeconds(120)).Token;

    /// <summary>Answers every request with what <c>handle</c> writes; on 127.0.0.1, a free port.</summary>
    private sealed class TinyHttpServer : IAsyncDisposable
    {
        private readonly HttpListener _listener = new();
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;

        public TinyHttpServer(Func<HttpListenerContext, Task> handle)
        {
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

            _loop = Task.Run(async () =>
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

                    _ = Task.Run(async () =>
                    {
                        try
                        {
                            await handle(context);
                        }
                        catch (Exception)
                        {
                            // the client hung up
                        }
                        finally
                        {
                            try
                            {
                                context.Response.Close();
                            }
                            catch (Exception)
                            {
                            }
                        }
                    });
                }
            });
        }

        public int Port { get; }

        public string Host => $"127.0.0.1:{Port}";

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Stop();
            try
            {
                await _loop;
            }
            catch (Exception)
            {
            }

            _listener.Close();
            _stop.Dispose();
        }
    }

    [Fact]
    public async Task An_endless_token_answer_is_cut_at_the_limit_with_a_clear_error()
    {
        long tokenBytesSent = 0;
        TinyHttpServer? server = null;
        server = new TinyHttpServer(async context =>
        {
            if (context.Request.Url!.AbsolutePath == "/token")
            {
                // 64 MiB of JSON-looking padding: the client must stop long before the end.
                context.Response.ContentType = "application/json";
                var chunk = Encoding.ASCII.GetBytes(new string(' ', 64 * 1024));
                await context.Response.OutputStream.WriteAsync("{\"token\":\""u8.ToArray());
                for (var i = 0; i < 1024; i++)
                {
                    await context.Response.OutputStream.WriteAsync(chunk);
                    Interlocked.Add(ref tokenBytesSent, chunk.Length);
                }

                return;
            }

            context.Response.StatusCode = 401;
            context.Response.AddHeader("WWW-Authenticate", $"Bearer realm=\"http://{server!.Host}/token\",service=\"tiny\"");
        });
        await using var _ = server;
        using var client = new RegistryClient();
        var repository = client.Repository(ImageReference.Parse($"{server.Host}/library/x:latest"));

        var error = await Assert.ThrowsAsync<RegistryAuthenticationException>(() => repository.GetManifestAsync("latest", Limit()));

        Assert.Contains("token service", error.Message);
        Assert.Contains($"larger than {RegistryClient.MaxTokenResponseBytes} bytes", error.Message);
    }

    [Fact]
    public async Task Redirects_go_to_the_same_host_or_https_and_at_most_five_times()
    {
        await using var server = new TinyHttpServer(context =>
        {
            var path = context.Request.Url!.AbsolutePath;
            var port = context.Request.Url.Port;
            switch (path)
            {
                case "/same":
                    context.Response.Redirect($"http://127.0.0.1:{port}/target");
                    break;
                case "/target":
                    context.Response.StatusCode = 200;
                    context.Response.OutputStream.Write("reached"u8);
                    break;
                case "/elsewhere-http":
                    // Another host (127.0.0.2 is another name for loopback, but not this origin) over plain http.
                    context.Response.Redirect($"http://127.0.0.2:{port}/target");
                    break;
                case "/other-port":
                    context.Response.Redirect($"http://127.0.0.1:{port + 1}/target");
                    break;
                default:
                    // /loop/N -> /loop/N+1 forever
                    var n = int.Parse(path.Split('/')[^1], System.Globalization.CultureInfo.InvariantCulture);
                    context.Response.Redirect($"http://127.0.0.1:{port}/loop/{n + 1}");
                    break;
            }

            return Task.CompletedTask;
        });
        using var client = new RegistryClient();
        var http = client.Http;

        Assert.Equal("reached", await http.GetStringAsync($"http://{server.Host}/same", Limit()));

        var plainElsewhere = await Assert.ThrowsAsync<HttpRequestException>(() => http.GetStringAsync($"http://{server.Host}/elsewhere-http", Limit()));
        Assert.Contains("must use https", plainElsewhere.Message);
        var otherPort = await Assert.ThrowsAsync<HttpRequestException>(() => http.GetStringAsync($"http://{server.Host}/other-port", Limit()));
        Assert.Contains("must use https", otherPort.Message);

        var loop = await Assert.ThrowsAsync<HttpRequestException>(() => http.GetStringAsync($"http://{server.Host}/loop/0", Limit()));
        Assert.Contains($"more than {RedirectPolicyHandler.MaxRedirects} times", loop.Message);
    }

    [Theory]
    [InlineData("https://registry.example/", "https://cdn.example/blob", null)]
    [InlineData("https://registry.example/", "http://registry.example/v2/x", "must use https")]
    [InlineData("https://registry.example/", "http://cdn.example/blob", "must use https")]
    [InlineData("https://registry.example/", "https://127.0.0.1/blob", "loopback")]
    [InlineData("https://registry.example/", "https://localhost:8080/blob", "loopback")]
    [InlineData("http://127.0.0.1:5000/", "http://127.0.0.1:5000/other", null)]
    [InlineData("http://127.0.0.1:5000/", "https://127.0.0.1:5001/other", null)]
    public void Redirect_policy(string origin, string target, string? refusal)
    {
        var why = RedirectPolicyHandler.Refusal(new Uri(origin), new Uri(target));
        if (refusal is null)
            Assert.Null(why);
        else
            Assert.Contains(refusal, why);
    }

    [Theory]
    [InlineData("registry.example", "https://auth.example/token", null)]
    [InlineData("registry.example", "http://auth.example/token", "must use https")]
    [InlineData("registry.example", "http://127.0.0.1:9999/token", "loopback")]
    [InlineData("registry.example", "https://127.0.0.1/token", "loopback")]
    [InlineData("registry.example", "https://[::1]/token", "loopback")]
    [InlineData("127.0.0.1:5000", "http://127.0.0.1:5001/token", null)]
    [InlineData("127.0.0.1:5000", "http://auth.example/token", "must use https")]
    public void Realm_policy(string registry, string realm, string? refusal)
    {
        using var client = new RegistryClient();
        var why = client.RealmRefusal(client.Endpoint(registry), new Uri(realm));
        if (refusal is null)
            Assert.Null(why);
        else
            Assert.Contains(refusal, why);
    }

    [Fact]
    public void An_http_realm_is_allowed_where_the_host_is_configured_plain_http()
    {
        using var client = new RegistryClient(new RegistryOptions
        {
            Hosts = new Dictionary<string, RegistryHostOptions> { ["auth.lan:8080"] = new() { PlainHttp = true } },
        });
        Assert.Null(client.RealmRefusal(client.Endpoint("registry.example"), new Uri("http://auth.lan:8080/token")));
    }

    [Fact]
    public async Task A_remote_registry_naming_a_loopback_realm_is_refused_before_any_request()
    {
        // The registry (a plain-http host by configuration, reached through a proxy-free name that is never contacted
        // for the token) names a loopback realm: the agent must not ask 127.0.0.1 for anything.
        var asked = 0;
        await using var realm = new TinyHttpServer(_ =>
        {
            Interlocked.Increment(ref asked);
            return Task.CompletedTask;
        });
        using var client = new RegistryClient();
        var endpoint = client.Endpoint("registry.example");
        var error = await Assert.ThrowsAsync<RegistryAuthenticationException>(() => client.AuthorizeAsync(endpoint,
            AuthChallenge.Parse($"Bearer realm=\"http://{realm.Host}/token\",service=\"x\""), "repository:x:pull", null, "pull x", Limit()));
        Assert.Contains("refused", error.Message);
        Assert.Contains("loopback", error.Message);
        Assert.Equal(0, asked);
    }
}
