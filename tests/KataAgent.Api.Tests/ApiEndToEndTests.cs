using System.Text;
using Google.Protobuf;
using Grpc.Core;
using KataAgent.Api.Client;
using KataAgent.Api.V1;
using KataAgent.Testing;

namespace KataAgent.Api.Tests;

/// <summary>The gRPC API end to end through the generated client, against a real serve with real runc sessions.</summary>
public sealed class ApiEndToEndTests(ApiFixture fixture) : IClassFixture<ApiFixture>
{
    private static CancellationToken Timeout(int seconds = 180) => new CancellationTokenSource(TimeSpan.FromSeconds(seconds)).Token;

    /// <param name="progress">each step as it starts ("validate") and ends ("validate done")</param>
    private async Task<SessionInfo> CreateAsync(ApiClient client, List<string>? progress = null)
    {
        using var call = client.Sessions.CreateSession(new CreateSessionRequest { Image = fixture.ImageName, RuntimeClass = "runc" }, cancellationToken: Timeout());
        await foreach (var reply in call.ResponseStream.ReadAllAsync())
        {
            if (reply.KindCase == CreateSessionReply.KindOneofCase.Session)
                return reply.Session;
            progress?.Add(reply.KindCase == CreateSessionReply.KindOneofCase.StepDone ? reply.StepDone.Step + " done" : reply.Progress);
        }
        throw new InvalidOperationException("no session in the create stream");
    }

    private static async Task<(string Stdout, string Stderr, ExecutionResult Result)> ExecuteAsync(ApiClient client, ExecuteRequest request)
    {
        using var call = request.Mode == ExecutionMode.Input
            ? client.Sessions.SendInput(new SendInputRequest { KernelId = request.KernelId, RunId = request.RunId, Text = request.Text }, cancellationToken: Timeout())
            : client.Sessions.Execute(request, cancellationToken: Timeout());
        return await RestOfRunAsync(call);
    }

    /// <summary>Reads an execute stream up to its first output and returns that output.</summary>
    private static async Task<string> FirstOutputAsync(AsyncServerStreamingCall<ExecuteReply> call)
    {
        while (await call.ResponseStream.MoveNext())
        {
            if (call.ResponseStream.Current.KindCase == ExecuteReply.KindOneofCase.Output)
                return call.ResponseStream.Current.Output.Data;
        }
        throw new InvalidOperationException("the run ended without output");
    }

    /// <summary>The rest of an execute stream: its output from here on and its result.</summary>
    private static async Task<(string Stdout, string Stderr, ExecutionResult Result)> RestOfRunAsync(AsyncServerStreamingCall<ExecuteReply> call)
    {
        var (stdout, stderr) = (new StringBuilder(), new StringBuilder());
        ExecutionResult? result = null;
        await foreach (var reply in call.ResponseStream.ReadAllAsync())
        {
            if (reply.KindCase == ExecuteReply.KindOneofCase.Result)
                result = reply.Result;
            else
                (reply.Output.Kind == "stderr" ? stderr : stdout).Append(reply.Output.Data);
        }
        return (stdout.ToString(), stderr.ToString(), result ?? throw new InvalidOperationException("no result"));
    }

    private static ExecuteRequest Query(string kernelId, string code) =>
        new() { KernelId = kernelId, RunId = "run-" + Guid.NewGuid().ToString("N")[..8], Mode = ExecutionMode.Query, Text = code };

    [Fact]
    public async Task A_session_that_ends_during_a_run_shows_its_end_and_no_active_run()
    {
        using var client = fixture.UnixClient();
        var session = await CreateAsync(client);
        try
        {
            // The runner (PID 1) stops on SIGTERM and the task exits 0 while this run is still going.
            var stopping = Query(session.KernelId, "import os, signal, time\nprint('stopping', flush=True)\nos.kill(1, signal.SIGTERM)\ntime.sleep(60)");
            using var call = client.Sessions.Execute(stopping, cancellationToken: Timeout());
            Assert.StartsWith("stopping", await FirstOutputAsync(call), StringComparison.Ordinal);
            var shown = await Eventually.WaitAsync(() => client.Sessions.GetSessionAsync(new SessionRef { KernelId = session.KernelId }).ResponseAsync,
                s => s.EndReason is not null, "the session to end", TimeSpan.FromSeconds(60));
            Assert.Equal(("exited", "exited (code 0)"), (shown.State, shown.EndReason.Description));
            Assert.Equal("", shown.ActiveRunId);
        }
        finally
        {
            await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = session.KernelId });
        }
    }

    [Fact]
    public async Task Unix_socket_session_lifecycle_runs_code_and_moves_files()
    {
        using var client = fixture.UnixClient();
        var info = await client.Agent.GetInfoAsync(new GetInfoRequest());
        Assert.Contains(info.RuntimeClasses, c => c.Name == "runc" && c.Usable);
        Assert.Equal("serving", (await client.Agent.HealthAsync(new HealthRequest())).Status);

        var progress = new List<string>();
        var session = await CreateAsync(client, progress);
        try
        {
            Assert.Equal("running", session.State);
            Assert.Equal("runc", session.RuntimeClass);
            // Each create step streamed as it started and as it ended; the session carries their durations.
            var steps = Core.Sessions.SessionCreator.StepNames;
            Assert.Equal(steps.SelectMany(step => new[] { step, step + " done" }), progress);
            Assert.Equal(steps, session.CreateSteps.Select(s => s.Step));
            Assert.All(session.CreateSteps, s => Assert.True(s.Seconds >= 0, s.ToString()));
            Assert.Contains((await client.Sessions.ListSessionsAsync(new ListSessionsRequest())).Sessions, s => s.KernelId == session.KernelId);
            var used = (await client.Agent.GetInfoAsync(new GetInfoRequest())).Used;
            Assert.True(used.Cpus > 0, "the session's cpus count as used");

            var (stdout, _, result) = await ExecuteAsync(client, Query(session.KernelId, "print(6*7)"));
            Assert.Equal("42\n", stdout);
            Assert.Equal("finished", result.Status);
            Assert.Equal(0, result.ExitCode);
            Assert.True(result.RunEnded);

            // State persists; an error reports on stderr with a non-zero exit code.
            await ExecuteAsync(client, Query(session.KernelId, "x = 41"));
            Assert.Equal("42\n", (await ExecuteAsync(client, Query(session.KernelId, "print(x + 1)"))).Stdout);
            var error = await ExecuteAsync(client, Query(session.KernelId, "1/0"));
            Assert.Contains("ZeroDivisionError", error.Stderr, StringComparison.Ordinal);
            Assert.NotEqual(0, error.Result.ExitCode);

            // input(): waiting-input, answered through SendInput.
            var ask = Query(session.KernelId, "name = input('who? ')\nprint('hello', name)");
            var asked = await ExecuteAsync(client, ask);
            Assert.Equal("waiting-input", asked.Result.Status);
            var answered = await ExecuteAsync(client, new ExecuteRequest { KernelId = session.KernelId, RunId = ask.RunId, Mode = ExecutionMode.Input, Text = "kata" });
            Assert.Contains("hello kata", answered.Stdout, StringComparison.Ordinal);

            // Upload (client streaming, several chunks), list, download (server streaming); a directory comes as a tar.
            var content = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat("0123456789abcdef", 10_000)));
            using (var upload = client.Sessions.Upload())
            {
                await upload.RequestStream.WriteAsync(new UploadRequest { Header = new UploadHeader { KernelId = session.KernelId, Path = "in/data.txt", CreateParents = true } });
                for (var offset = 0; offset < content.Length; offset += 50_000)
                    await upload.RequestStream.WriteAsync(new UploadRequest { Chunk = ByteString.CopyFrom(content, offset, Math.Min(50_000, content.Length - offset)) });
                await upload.RequestStream.CompleteAsync();
                Assert.Equal(content.Length, (await upload).BytesWritten);
            }
            Assert.Equal("160000\n", (await ExecuteAsync(client, Query(session.KernelId, "print(len(open('/home/work/in/data.txt').read()))"))).Stdout);
            var listing = await client.Sessions.ListFilesAsync(new ListFilesRequest { KernelId = session.KernelId, Path = "in" });
            Assert.Contains(listing.Entries, e => e.Name == "data.txt" && e.Type == "file" && e.Size == content.Length);
            var (header, downloaded) = await DownloadAsync(client, session.KernelId, "in/data.txt");
            Assert.False(header.IsTar);
            Assert.Equal(content, downloaded);
            var (dirHeader, tar) = await DownloadAsync(client, session.KernelId, "in");
            Assert.True(dirHeader.IsTar);
            Assert.True(tar.Length > content.Length);

            var escape = await Assert.ThrowsAsync<RpcException>(() => client.Sessions.ListFilesAsync(new ListFilesRequest { KernelId = session.KernelId, Path = "../.." }).ResponseAsync);
            Assert.Equal(StatusCode.PermissionDenied, escape.StatusCode);
        }
        finally
        {
            Assert.True((await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = session.KernelId })).Existed);
        }
        // Gone but remembered: GetSession answers with the tombstone, other calls with NotFound saying how it ended.
        var gone = await client.Sessions.GetSessionAsync(new SessionRef { KernelId = session.KernelId });
        Assert.Equal("destroyed", gone.State);
        Assert.Equal("destroyed", gone.EndReason.Kind);
        Assert.Equal("api", gone.EndReason.By);
        Assert.Equal("destroyed (by api)", gone.EndReason.Description);
        var ended = await Assert.ThrowsAsync<RpcException>(() => client.Sessions.GetStatsAsync(new SessionRef { KernelId = session.KernelId }).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, ended.StatusCode);
        Assert.EndsWith("ago: destroyed (by api)", ended.Status.Detail, StringComparison.Ordinal);
        Assert.False((await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = session.KernelId })).Existed);
        // Listed only when asked for: include_ended adds the tombstones with their end reason.
        Assert.DoesNotContain((await client.Sessions.ListSessionsAsync(new ListSessionsRequest())).Sessions, s => s.KernelId == session.KernelId);
        var listed = Assert.Single((await client.Sessions.ListSessionsAsync(new ListSessionsRequest { IncludeEnded = true })).Sessions,
            s => s.KernelId == session.KernelId);
        Assert.Equal("destroyed", listed.State);
        Assert.Equal("destroyed (by api)", listed.EndReason.Description);
    }

    private static async Task<(DownloadHeader Header, byte[] Data)> DownloadAsync(ApiClient client, string kernelId, string path)
    {
        using var call = client.Sessions.Download(new DownloadRequest { KernelId = kernelId, Path = path }, cancellationToken: Timeout());
        DownloadHeader? header = null;
        using var data = new MemoryStream();
        await foreach (var reply in call.ResponseStream.ReadAllAsync())
        {
            if (reply.KindCase == DownloadReply.KindOneofCase.Header)
                header = reply.Header;
            else
                reply.Chunk.WriteTo(data);
        }
        return (header ?? throw new InvalidOperationException("no header"), data.ToArray());
    }

    [Fact]
    public async Task Tcp_refuses_missing_and_wrong_tokens_and_serves_the_right_one()
    {
        var sessionsBefore = fixture.Agent.Sessions.Count;
        using (var anonymous = fixture.TcpClient(token: null))
        {
            var e = await Assert.ThrowsAsync<RpcException>(() => anonymous.Agent.GetInfoAsync(new GetInfoRequest()).ResponseAsync);
            Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
            // Refused before any work: a create with no token makes no session.
            var create = await Assert.ThrowsAsync<RpcException>(async () =>
            {
                using var call = anonymous.Sessions.CreateSession(new CreateSessionRequest { Image = fixture.ImageName, RuntimeClass = "runc" });
                await call.ResponseStream.MoveNext();
            });
            Assert.Equal(StatusCode.Unauthenticated, create.StatusCode);
            Assert.Equal(sessionsBefore, fixture.Agent.Sessions.Count);
        }
        using (var wrong = fixture.TcpClient(token: "not-the-token"))
        {
            var e = await Assert.ThrowsAsync<RpcException>(() => wrong.Sessions.ListSessionsAsync(new ListSessionsRequest()).ResponseAsync);
            Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
            Assert.Contains("not valid", e.Status.Detail, StringComparison.Ordinal);
        }
        var before = fixture.Agent.Sessions.Count;
        using var client = fixture.TcpClient(ApiFixture.Token);
        var session = await CreateAsync(client);
        try
        {
            Assert.Equal(before + 1, fixture.Agent.Sessions.Count);
            Assert.Equal("42\n", (await ExecuteAsync(client, Query(session.KernelId, "print(6*7)"))).Stdout);
        }
        finally
        {
            await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = session.KernelId });
        }
    }

    [Fact]
    public async Task Errors_map_to_status_codes_with_actionable_messages()
    {
        using var client = fixture.UnixClient();
        var notFound = await Assert.ThrowsAsync<RpcException>(() => client.Sessions.GetSessionAsync(new SessionRef { KernelId = "no-such-session" }).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, notFound.StatusCode);
        Assert.Contains("session ls", notFound.Status.Detail, StringComparison.Ordinal);

        var noImage = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            using var call = client.Sessions.CreateSession(new CreateSessionRequest { Image = "no/such:image", RuntimeClass = "runc" });
            while (await call.ResponseStream.MoveNext())
            {
            }
        });
        Assert.Equal(StatusCode.InvalidArgument, noImage.StatusCode);
        Assert.Contains("import", noImage.Status.Detail, StringComparison.Ordinal);

        var badClass = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            using var call = client.Sessions.CreateSession(new CreateSessionRequest { Image = fixture.ImageName, RuntimeClass = "nonesuch" });
            while (await call.ResponseStream.MoveNext())
            {
            }
        });
        Assert.Equal(StatusCode.InvalidArgument, badClass.StatusCode);

        var tooBig = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            using var call = client.Sessions.CreateSession(new CreateSessionRequest { Image = fixture.ImageName, RuntimeClass = "runc", Cpus = 100_000 });
            while (await call.ResponseStream.MoveNext())
            {
            }
        });
        Assert.True(tooBig.StatusCode is StatusCode.ResourceExhausted or StatusCode.InvalidArgument, tooBig.ToString());

        var noRunId = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            using var call = client.Sessions.Execute(new ExecuteRequest { KernelId = "x", Mode = ExecutionMode.Query, Text = "1" });
            await call.ResponseStream.MoveNext();
        });
        Assert.Equal(StatusCode.InvalidArgument, noRunId.StatusCode);

        var missingImage = await Assert.ThrowsAsync<RpcException>(() => client.Images.InspectImageAsync(new ImageRef { Name = "no/such:image" }).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, missingImage.StatusCode);
    }

    [Fact]
    public async Task A_second_run_waits_for_the_first_and_the_event_feed_reports_the_lifecycle()
    {
        using var client = fixture.UnixClient();
        using var watchCancel = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        using var watch = client.Agent.WatchEvents(new WatchEventsRequest(), cancellationToken: watchCancel.Token);
        var events = new List<SessionEvent>();
        // The server sends the headers once it has subscribed: every event after this is seen.
        await watch.ResponseHeadersAsync;
        var session = await CreateAsync(client);
        try
        {
            // Two runs sent together: the second is queued (not refused) and starts when the first is over.
            var first = Query(session.KernelId, "import sys, time\nsys.stdout.write('sleeping\\n')\ntime.sleep(5)\norder = [1]");
            var second = Query(session.KernelId, "order.append(2)\nprint(order)");
            using var firstCall = client.Sessions.Execute(first, cancellationToken: Timeout());
            Assert.StartsWith("sleeping", await FirstOutputAsync(firstCall), StringComparison.Ordinal);
            // (The server sends no headers before the first output, so nothing says when the second reached it:
            // with the first sleeping 5 s it arrives during the sleep; before queueing, it was refused.)
            using var secondCall = client.Sessions.Execute(second, cancellationToken: Timeout());
            Assert.Equal(first.RunId, (await client.Sessions.GetSessionAsync(new SessionRef { KernelId = session.KernelId })).ActiveRunId);
            var firstRest = await RestOfRunAsync(firstCall);
            var secondRun = await RestOfRunAsync(secondCall);
            Assert.Equal(("finished", 0), (firstRest.Result.Status, firstRest.Result.ExitCode));
            Assert.Equal("[1, 2]\n", secondRun.Stdout);
            Assert.Equal(("finished", 0, second.RunId), (secondRun.Result.Status, secondRun.Result.ExitCode, secondRun.Result.RunId));
            Assert.False(secondRun.Result.HasOptionsJson);

            // A run that outlasts the flush timeout without output comes back as continued, no output, no exit code.
            var quiet = Query(session.KernelId, "import time; time.sleep(3)");
            quiet.FlushTimeoutSeconds = 1;
            var continued = await ExecuteAsync(client, quiet);
            Assert.Equal("continued", continued.Result.Status);
            Assert.Equal(("", ""), (continued.Stdout, continued.Stderr));
            Assert.False(continued.Result.HasExitCode);
            Assert.False(continued.Result.HasOptionsJson);
            Assert.False(continued.Result.RunEnded);
            var rest = continued;
            for (int calls = 0; rest.Result.Status == "continued" && calls < 120; calls++)
                rest = await ExecuteAsync(client, new ExecuteRequest { KernelId = session.KernelId, RunId = quiet.RunId, Mode = ExecutionMode.Continue, FlushTimeoutSeconds = 1 });
            Assert.Equal(("finished", 0), (rest.Result.Status, rest.Result.ExitCode));

            var sleeper = Query(session.KernelId, "import sys, time\nsys.stdout.write('sleeping\\n')\ntime.sleep(60)");
            using var sleeperCall = client.Sessions.Execute(sleeper);
            Assert.StartsWith("sleeping", await FirstOutputAsync(sleeperCall), StringComparison.Ordinal);
            await client.Sessions.InterruptAsync(new SessionRef { KernelId = session.KernelId });
            var stderr = new StringBuilder();
            await foreach (var reply in sleeperCall.ResponseStream.ReadAllAsync())
            {
                if (reply.KindCase == ExecuteReply.KindOneofCase.Output)
                    stderr.Append(reply.Output.Data);
            }
            Assert.Contains("KeyboardInterrupt", stderr.ToString(), StringComparison.Ordinal);

            // Services in Backend.AI's shape: no command needed (the runner resolves the name), only a name.
            var noName = await Assert.ThrowsAsync<RpcException>(() => client.Sessions.StartServiceAsync(new StartServiceRequest { KernelId = session.KernelId }).ResponseAsync);
            Assert.Equal(StatusCode.InvalidArgument, noName.StatusCode);
            Assert.Contains("needs a name", noName.Status.Detail, StringComparison.Ordinal);
            var unknown = await client.Sessions.StartServiceAsync(new StartServiceRequest { KernelId = session.KernelId, Name = "no-such-app", Ports = { 8090 } });
            Assert.Equal("failed", unknown.Status);
            Assert.NotEmpty(unknown.Error);
            var apps = await client.Sessions.GetAppsAsync(new GetAppsRequest { KernelId = session.KernelId, Name = "no-such-app" });
            Assert.Equal("done", apps.Status);
            Assert.Empty(apps.Apps);
        }
        finally
        {
            await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = session.KernelId });
        }
        while (await watch.ResponseStream.MoveNext(watchCancel.Token))
        {
            if (watch.ResponseStream.Current.KernelId != session.KernelId)
                continue;
            events.Add(watch.ResponseStream.Current);
            if (watch.ResponseStream.Current.Kind == "destroyed")
                break;
        }
        Assert.Equal(["started", "destroyed"], events.Select(e => e.Kind).Where(k => k is "started" or "destroyed"));
    }

    [Fact]
    public async Task Graceful_shutdown_finishes_calls_in_flight_refuses_new_ones_and_leaves_sessions_running()
    {
        var socket = Path.Combine(fixture.DataDir, "second.sock");
        var server = await fixture.StartServerAsync(socket, tcp: false);
        string kernelId;
        try
        {
            using var client = ApiClient.ForUnixSocket(socket);
            var session = await CreateAsync(client);
            kernelId = session.KernelId;
            using var run = client.Sessions.Execute(Query(kernelId, "import sys, time\nsys.stdout.write('started\\n')\ntime.sleep(2)\nprint('done')"),
                cancellationToken: Timeout());
            // The first output proves the call is in flight on the server when it is told to stop.
            var started = await FirstOutputAsync(run);
            var stopping = server.StopAsync();
            var (stdout, _, result) = await RestOfRunAsync(run);
            await stopping;
            Assert.Equal("started\ndone\n", started + stdout);
            Assert.Equal("finished", result.Status);

            var refused = await Assert.ThrowsAsync<RpcException>(() => client.Agent.HealthAsync(new HealthRequest()).ResponseAsync);
            Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
            Assert.False(File.Exists(socket), "the socket file is removed on shutdown");
        }
        finally
        {
            await server.DisposeAsync();
        }
        // The session outlived the server that created it, and another server still serves it.
        using var other = fixture.UnixClient();
        Assert.Equal("running", (await other.Sessions.GetSessionAsync(new SessionRef { KernelId = kernelId })).State);
        Assert.Equal("1\n", (await ExecuteAsync(other, Query(kernelId, "print(1)"))).Stdout);
        await other.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = kernelId });
    }

    [Fact]
    public async Task Stats_logs_commit_and_restart()
    {
        using var client = fixture.UnixClient();
        var session = await CreateAsync(client);
        string? second = null;
        try
        {
            await ExecuteAsync(client, Query(session.KernelId, "open('/home/work/marker.txt', 'w').write('x')\nopen('/etc/committed.txt', 'w').write('from a commit')"));
            var stats = await client.Sessions.GetStatsAsync(new SessionRef { KernelId = session.KernelId });
            Assert.Equal(session.KernelId, stats.KernelId);
            Assert.True(stats.MemoryUsageBytes > 0, stats.ToString());

            using (var logs = client.Sessions.GetLogs(new GetLogsRequest { KernelId = session.KernelId }))
                Assert.True(await logs.ResponseStream.MoveNext());

            var committed = await client.Sessions.CommitSessionAsync(new CommitSessionRequest { KernelId = session.KernelId, ImageName = "api-test/committed:1" });
            Assert.StartsWith("sha256:", committed.ManifestDigest, StringComparison.Ordinal);
            var again = await Assert.ThrowsAsync<RpcException>(() => client.Sessions.CommitSessionAsync(
                new CommitSessionRequest { KernelId = session.KernelId, ImageName = "api-test/committed:1" }).ResponseAsync);
            Assert.Equal(StatusCode.AlreadyExists, again.StatusCode);

            using (var call = client.Sessions.CreateSession(new CreateSessionRequest { Image = "api-test/committed:1", RuntimeClass = "runc" }, cancellationToken: Timeout()))
            {
                await foreach (var reply in call.ResponseStream.ReadAllAsync())
                {
                    if (reply.KindCase == CreateSessionReply.KindOneofCase.Session)
                        second = reply.Session.KernelId;
                }
            }
            Assert.NotNull(second);
            Assert.Equal("from a commit\n", (await ExecuteAsync(client, Query(second, "print(open('/etc/committed.txt').read())"))).Stdout);

            var restarted = await client.Sessions.RestartSessionAsync(new SessionRef { KernelId = session.KernelId });
            Assert.Equal("running", restarted.State);
            Assert.Equal("x\n", (await ExecuteAsync(client, Query(session.KernelId, "print(open('/home/work/marker.txt').read())"))).Stdout);
        }
        finally
        {
            if (second is not null)
                await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = second });
            await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = session.KernelId });
            try
            {
                await client.Images.RemoveImageAsync(new ImageRef { Name = "api-test/committed:1" });
            }
            catch (RpcException)
            {
            }
        }
    }

    [Fact]
    public async Task Tls_with_a_token_serves_a_client_that_trusts_the_certificate_and_metrics_are_scraped()
    {
        using var key = System.Security.Cryptography.RSA.Create(2048);
        var request = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=127.0.0.1", key,
            System.Security.Cryptography.HashAlgorithmName.SHA256, System.Security.Cryptography.RSASignaturePadding.Pkcs1);
        var san = new System.Security.Cryptography.X509Certificates.SubjectAlternativeNameBuilder();
        san.AddIpAddress(System.Net.IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(1));
        var certPath = Path.Combine(fixture.DataDir, "tls.crt");
        var keyPath = Path.Combine(fixture.DataDir, "tls.key");
        await File.WriteAllTextAsync(certPath, certificate.ExportCertificatePem());
        await File.WriteAllTextAsync(keyPath, key.ExportPkcs8PrivateKeyPem());

        var server = await Server.ApiServer.StartAsync(fixture.Agent, new Server.ApiServerOptions
        {
            SocketPath = Path.Combine(fixture.DataDir, "tls.sock"),
            TcpListen = "127.0.0.1:0",
            Token = ApiFixture.Token,
            TlsCertificatePath = certPath,
            TlsKeyPath = keyPath,
            MetricsListen = "127.0.0.1:0",
        }, Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);
        try
        {
            var address = new Uri($"https://127.0.0.1:{server.TcpEndpoint!.Port}");
            using (var trusting = ApiClient.ForTcp(address, ApiFixture.Token, certificate))
                Assert.Equal("serving", (await trusting.Agent.HealthAsync(new HealthRequest())).Status);
            using (var noToken = ApiClient.ForTcp(address, null, certificate))
            {
                var e = await Assert.ThrowsAsync<RpcException>(() => noToken.Agent.HealthAsync(new HealthRequest()).ResponseAsync);
                Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
            }
            using (var untrusting = ApiClient.ForTcp(address, ApiFixture.Token))
            {
                // The TLS handshake fails on the client (an untrusted certificate): the call never reaches the agent.
                var e = await Assert.ThrowsAsync<RpcException>(() => untrusting.Agent.HealthAsync(new HealthRequest()).ResponseAsync);
                Assert.True(e.StatusCode is StatusCode.Unavailable or StatusCode.Internal, e.ToString());
            }

            Assert.NotEqual(server.TcpEndpoint.Port, server.MetricsEndpoint!.Port);
            using var http = new HttpClient();
            var metrics = await http.GetStringAsync(new Uri($"http://127.0.0.1:{server.MetricsEndpoint.Port}/metrics"));
            Assert.Contains("kata_agent_session_create_seconds", metrics, StringComparison.Ordinal);
            Assert.Contains("kata_agent_executions_total", metrics, StringComparison.Ordinal);
            var other = await http.GetAsync(new Uri($"http://127.0.0.1:{server.MetricsEndpoint.Port}/kataagent.v1.Agent/Health"));
            Assert.Equal(System.Net.HttpStatusCode.NotFound, other.StatusCode);
        }
        finally
        {
            await server.DisposeAsync();
        }
    }

    [SkippableFact]
    public async Task Push_to_a_local_registry_and_pull_back_with_progress()
    {
        await using var registry = await LocalRegistry.StartAsync();
        using var client = fixture.UnixClient();
        var reference = $"{registry.Host}/api-test/python:1";
        try
        {
            var pushed = await TransferAsync(client.Images.PushImage(new PushImageRequest { Image = fixture.ImageName, Destination = reference }, cancellationToken: Timeout()));
            Assert.StartsWith("sha256:", pushed.Image.Digest, StringComparison.Ordinal);
            Assert.NotEmpty(pushed.Progress);

            var pulled = await TransferAsync(client.Images.PullImage(new PullImageRequest { Reference = reference, Name = "api-test/pulled:1" }, cancellationToken: Timeout()));
            Assert.Equal("api-test/pulled:1", pulled.Image.Name);
            Assert.True(pulled.Image.Unpacked);
            Assert.Equal("1", (await client.Images.InspectImageAsync(new ImageRef { Name = "api-test/pulled:1" })).Labels["ai.backend.kernelspec"]);

            var missing = await Assert.ThrowsAsync<RpcException>(() => TransferAsync(client.Images.PullImage(new PullImageRequest { Reference = $"{registry.Host}/api-test/none:1" })));
            Assert.Equal(StatusCode.NotFound, missing.StatusCode);
        }
        finally
        {
            try
            {
                await client.Images.RemoveImageAsync(new ImageRef { Name = "api-test/pulled:1" });
            }
            catch (RpcException)
            {
            }
        }
    }

    private static async Task<(ImageInfo Image, List<TransferProgress> Progress)> TransferAsync(AsyncServerStreamingCall<TransferReply> call)
    {
        using (call)
        {
            var progress = new List<TransferProgress>();
            await foreach (var reply in call.ResponseStream.ReadAllAsync())
            {
                if (reply.KindCase == TransferReply.KindOneofCase.Image)
                    return (reply.Image, progress);
                progress.Add(reply.Progress);
            }
            throw new InvalidOperationException("no image at the end of the transfer");
        }
    }

    [Fact]
    public async Task Pause_and_resume_round_trip_with_state_stats_refusal_and_events()
    {
        using var client = fixture.UnixClient();
        using var watchCancel = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        using var watch = client.Agent.WatchEvents(new WatchEventsRequest(), cancellationToken: watchCancel.Token);
        await watch.ResponseHeadersAsync;
        var session = await CreateAsync(client);
        var id = new SessionRef { KernelId = session.KernelId };
        try
        {
            await ExecuteAsync(client, Query(session.KernelId, "kept = 42"));
            Assert.Equal("paused", (await client.Sessions.PauseSessionAsync(id)).State);
            Assert.Equal("paused", (await client.Sessions.GetSessionAsync(id)).State);
            Assert.Equal("paused", (await client.Sessions.GetStatsAsync(id)).State);

            var refused = await Assert.ThrowsAsync<RpcException>(() => ExecuteAsync(client, Query(session.KernelId, "print(kept)")));
            Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
            Assert.Contains("is paused", refused.Status.Detail, StringComparison.Ordinal);
            Assert.Contains("session resume", refused.Status.Detail, StringComparison.Ordinal);

            Assert.Equal("running", (await client.Sessions.ResumeSessionAsync(id)).State);
            Assert.Equal("running", (await client.Sessions.GetStatsAsync(id)).State);
            Assert.Equal("42\n", (await ExecuteAsync(client, Query(session.KernelId, "print(kept)"))).Stdout);

            var missing = await Assert.ThrowsAsync<RpcException>(() => client.Sessions.PauseSessionAsync(new SessionRef { KernelId = "no-such-session" }).ResponseAsync);
            Assert.Equal(StatusCode.NotFound, missing.StatusCode);
        }
        finally
        {
            await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = session.KernelId });
        }
        var kinds = new List<string>();
        while (await watch.ResponseStream.MoveNext(watchCancel.Token))
        {
            if (watch.ResponseStream.Current.KernelId != session.KernelId)
                continue;
            kinds.Add(watch.ResponseStream.Current.Kind + ":" + watch.ResponseStream.Current.State);
            if (watch.ResponseStream.Current.Kind == "destroyed")
                break;
        }
        Assert.Equal(["started:running", "paused:paused", "resumed:running", "destroyed:destroyed"], kinds);
    }

    [Fact]
    public async Task Timeouts_are_set_on_create_extended_and_end_the_session_with_their_reason()
    {
        using var client = fixture.UnixClient();
        SessionInfo session;
        using (var call = client.Sessions.CreateSession(new CreateSessionRequest
               {
                   Image = fixture.ImageName, RuntimeClass = "runc", IdleTimeoutSeconds = 600, MaxLifetimeSeconds = 3600,
               }, cancellationToken: Timeout()))
        {
            session = await call.ResponseStream.ReadAllAsync().Where(r => r.KindCase == CreateSessionReply.KindOneofCase.Session)
                .Select(r => r.Session).FirstAsync();
        }
        var id = new SessionRef { KernelId = session.KernelId };
        try
        {
            Assert.NotNull(session.IdleDeadline);
            Assert.NotNull(session.LifetimeDeadline);
            var lifetime = session.LifetimeDeadline.ToDateTimeOffset();
            Assert.InRange(lifetime - session.CreatedAt.ToDateTimeOffset(), TimeSpan.FromSeconds(3599), TimeSpan.FromSeconds(3601));

            var extended = await client.Sessions.ExtendSessionAsync(new ExtendSessionRequest { KernelId = session.KernelId, BySeconds = 1800 });
            Assert.Equal(lifetime + TimeSpan.FromSeconds(1800), extended.LifetimeDeadline.ToDateTimeOffset());
            Assert.Equal(extended.LifetimeDeadline, (await client.Sessions.GetSessionAsync(id)).LifetimeDeadline);

            var refused = await Assert.ThrowsAsync<RpcException>(() => client.Sessions.ExtendSessionAsync(new ExtendSessionRequest { KernelId = session.KernelId, BySeconds = -5 }).ResponseAsync);
            Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
            Assert.Contains("positive", refused.Status.Detail, StringComparison.Ordinal);
            var missing = await Assert.ThrowsAsync<RpcException>(() => client.Sessions.ExtendSessionAsync(new ExtendSessionRequest { KernelId = "no-such-session", BySeconds = 5 }).ResponseAsync);
            Assert.Equal(StatusCode.NotFound, missing.StatusCode);
        }
        finally
        {
            await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = session.KernelId });
        }

        // A short lifetime ends the session by itself; GetSession then answers with the reason.
        using (var call = client.Sessions.CreateSession(new CreateSessionRequest { Image = fixture.ImageName, RuntimeClass = "runc", MaxLifetimeSeconds = 5 },
                   cancellationToken: Timeout()))
        {
            session = await call.ResponseStream.ReadAllAsync().Where(r => r.KindCase == CreateSessionReply.KindOneofCase.Session)
                .Select(r => r.Session).FirstAsync();
        }
        var ended = await Eventually.WaitAsync(async () => (await client.Sessions.GetSessionAsync(new SessionRef { KernelId = session.KernelId })).EndReason,
            reason => reason?.Kind == "lifetime-expired", $"session {session.KernelId} to end lifetime-expired", TimeSpan.FromMinutes(2));
        Assert.Contains("lifetime", ended!.Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Executing_in_an_exited_session_fails_at_once_saying_what_to_do()
    {
        using var client = fixture.UnixClient();
        var session = await CreateAsync(client);
        try
        {
            var record = fixture.Agent.GetSession(session.KernelId).Record;
            await fixture.Agent.Containerd.Tasks.KillAsync(record.ContainerId, 9, all: true);
            await Eventually.WaitAsync(async () => (await client.Sessions.GetSessionAsync(new SessionRef { KernelId = session.KernelId })).State,
                state => state == "exited", $"session {session.KernelId} to be reported exited after its task was killed");
            var e = await Assert.ThrowsAsync<RpcException>(() => ExecuteAsync(client, Query(session.KernelId, "print(1)")));
            Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
            Assert.Contains("session restart", e.Status.Detail, StringComparison.Ordinal);
            Assert.Contains("has exited (signaled (signal 9))", e.Status.Detail, StringComparison.Ordinal);
            var info = await client.Sessions.GetSessionAsync(new SessionRef { KernelId = session.KernelId });
            Assert.Equal("signaled", info.EndReason.Kind);
            Assert.Equal(9, info.EndReason.Signal);
        }
        finally
        {
            await client.Sessions.DestroySessionAsync(new DestroySessionRequest { KernelId = session.KernelId });
        }
    }

    [Fact]
    public async Task Images_list_and_inspect_show_the_base_image_with_its_labels()
    {
        using var client = fixture.UnixClient();
        var list = await client.Images.ListImagesAsync(new ListImagesRequest());
        var image = Assert.Single(list.Images, i => i.Name == fixture.ImageName);
        Assert.StartsWith("sha256:", image.Digest, StringComparison.Ordinal);
        Assert.True(image.Unpacked);
        var details = await client.Images.InspectImageAsync(new ImageRef { Name = fixture.ImageName });
        Assert.Equal("1", details.Labels["ai.backend.kernelspec"]);
        Assert.NotEmpty(details.Layers);
    }
}
