using System.Diagnostics;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using KataAgent.BackendAi.Rpc;
using KataAgent.BackendAi.Serialization;
using KataAgent.Testing;

namespace KataAgent.BackendAi.Tests.Rpc;

/// <summary>The C# RPC server against the real manager side: pyzmq DEALER speaking Callosum (assets/callosum_client.py).</summary>
public sealed class CallosumRpcServerTests
{
    private static readonly TimeSpan Long = TimeSpan.FromMinutes(2);

    private static IBackendAiCodec Codec() => BackendAiCodec.Instance;

    private static CallosumRpcServer StartServer(IRpcDispatcher dispatcher, string endpoint = "tcp://127.0.0.1:0", CallosumCurveOptions? curve = null) =>
        new(new CallosumRpcServerOptions { Endpoint = endpoint, Curve = curve }, dispatcher, Codec());

    private static object Invoke(string method, object?[] args, object? okey = null, bool zip = false, long? seq = null, double timeout = 120) =>
        new { op = "invoke", method, args, kwargs = new Dictionary<string, object?>(), okey = okey ?? new { str = "" }, zip, seq, timeout };

    [Fact]
    public async Task BackendAiValues_TravelThroughBothApplicationSerializers()
    {
        await using var server = StartServer(new TestDispatcher());
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);
        var kernelId = Guid.Parse("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");

        JsonObject reply = await client.SendAsync(Invoke("echo",
            [Tagged("$uuid", kernelId.ToString()), Tagged("$tuple", new object[] { 1, "a" }), Tagged("$bin", "AAE=")]));

        Assert.Equal("bai", client.Serializer);
        Assert.Equal(2, reply["type"]!.GetValue<int>());
        Assert.Equal($$"""[{"$uuid":"{{kernelId}}"},[1,"a"],{"$bin":"AAE="}]""", reply["result"]!.ToJsonString());
    }

    [Fact]
    public async Task Handshake_PingIsAnsweredPongWithBothFramesEchoed()
    {
        await using var server = StartServer(new TestDispatcher());
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);

        Assert.True((await client.SendAsync(new { op = "handshake", timeout = 60 }))["ok"]!.GetValue<bool>());
        JsonObject pong = await client.SendAsync(new { op = "ping_frames", f2 = "0102ff", f3 = "", timeout = 60 });

        Assert.Equal(["504f4e47", "0102ff", ""], pong["frames"]!.AsArray().Select(f => f!.GetValue<string>()));
    }

    [Fact]
    public async Task Ping_ReturnsItsArgumentAsResult_WithEmptyArrayMetaAndTheCallosumHeader()
    {
        await using var server = StartServer(new TestDispatcher());
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);

        JsonObject reply = await client.SendAsync(Invoke("ping", ["hello"]));

        Assert.Equal(2, reply["type"]!.GetValue<int>());
        Assert.Equal("hello", reply["result"]!.GetValue<string>());
        Assert.Equal("90", reply["meta_hex"]!.GetValue<string>());
        Assert.False(reply["zip"]!.GetValue<bool>());
        Assert.Equal(["meth", "okey", "seq", "type", "zip"], reply["header_keys"]!.AsArray().Select(k => k!.GetValue<string>()));
        Assert.Equal("ping", reply["meth"]!.GetValue<string>());
    }

    [Fact]
    public async Task UnknownMethod_AnswersErrorNamingIt_AndTheServerAnswersTheNextCall()
    {
        await using var server = StartServer(new TestDispatcher());
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);

        JsonObject error = await client.SendAsync(Invoke("no_such_method", []));
        JsonObject next = await client.SendAsync(Invoke("ping", ["still here"]));

        Assert.Equal(4, error["type"]!.GetValue<int>());
        Assert.Equal("KeyError", error["name"]!.GetValue<string>());
        Assert.Equal("KeyError('no_such_method')", error["repr"]!.GetValue<string>());
        Assert.Contains("no_such_method", error["traceback"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.True(error["body_is_nil"]!.GetValue<bool>());
        Assert.Equal("still here", next["result"]!.GetValue<string>());
    }

    [Fact]
    public async Task Cancel_OfARunningCall_CancelsTheHandlersToken_AndAnswersCancelled()
    {
        var dispatcher = new TestDispatcher();
        await using var server = StartServer(dispatcher);
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);

        long seq = (await client.SendAsync(new { op = "send", method = "slow", args = Array.Empty<object>(), okey = new { str = "" } }))["seq"]!.GetValue<long>();
        await dispatcher.SlowStarted.Task.WaitAsync(Long);
        await client.SendAsync(new { op = "cancel", method = "slow", okey = new { str = "" }, seq });
        JsonObject reply = await client.SendAsync(new { op = "recv", method = "slow", okey = new { str = "" }, seq, timeout = 120 });

        await dispatcher.SlowSawCancellation.Task.WaitAsync(Long);
        Assert.Equal(6, reply["type"]!.GetValue<int>());
        Assert.Equal(seq, reply["seq"]!.GetValue<long>());
        Assert.Equal("90", reply["meta_hex"]!.GetValue<string>());
        Assert.True(reply["body_is_nil"]!.GetValue<bool>());
        await Eventually.WaitAsync(() => server.InFlightCalls == 0, "the cancelled call to leave the in-flight table");
    }

    [Fact]
    public async Task HandlerExceptions_AnswerFailureWithPythonNameReprAndTraceback()
    {
        await using var server = StartServer(new TestDispatcher());
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);

        JsonObject rpcFailure = await client.SendAsync(Invoke("fail", []));
        JsonObject dotnetFailure = await client.SendAsync(Invoke("fail_dotnet", []));

        Assert.Equal(3, rpcFailure["type"]!.GetValue<int>());
        Assert.Equal("FileNotFoundError", rpcFailure["name"]!.GetValue<string>());
        Assert.Equal("FileNotFoundError('no such file: x')", rpcFailure["repr"]!.GetValue<string>());
        Assert.Contains("FileNotFoundError: no such file: x", rpcFailure["traceback"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.True(rpcFailure["body_is_nil"]!.GetValue<bool>());
        Assert.Equal(3, dotnetFailure["type"]!.GetValue<int>());
        Assert.Equal("RuntimeError", dotnetFailure["name"]!.GetValue<string>());
        Assert.Equal("RuntimeError(\"it's broken\")", dotnetFailure["repr"]!.GetValue<string>());
        Assert.Contains("System.InvalidOperationException", dotnetFailure["traceback"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ZipBody_IsSnappyDecompressed_AndTheReplyIsPlain()
    {
        await using var server = StartServer(new TestDispatcher());
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);
        string text = string.Concat(Enumerable.Repeat("compress me, ", 5000)) + "end";

        JsonObject reply = await client.SendAsync(Invoke("echo", [text], zip: true));

        Assert.Equal(2, reply["type"]!.GetValue<int>());
        Assert.Equal(text, reply["result"]!.GetValue<string>());
        Assert.False(reply["zip"]!.GetValue<bool>());
    }

    [Fact]
    public async Task OrderKey_IsEchoedWithItsMsgpackType()
    {
        await using var server = StartServer(new TestDispatcher());
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);

        foreach (object? okey in new object?[] { new { str = "" }, new { bin = "" }, new { str = "k1" }, new { bin = "00ff10" } })
        {
            JsonObject reply = await client.SendAsync(Invoke("ping", ["x"], okey));
            Assert.Equal(2, reply["type"]!.GetValue<int>());
            Assert.Equal(System.Text.Json.JsonSerializer.Serialize(okey), reply["okey"]!.ToJsonString());
        }
        JsonObject nilKey = await client.SendAsync(new { op = "invoke", method = "ping", args = new object[] { "x" }, okey = (object?)null, timeout = 120 });
        Assert.Equal(2, nilKey["type"]!.GetValue<int>());
        Assert.Null(nilKey["okey"]);
    }

    [Fact]
    public async Task Seq_IsEchoed()
    {
        await using var server = StartServer(new TestDispatcher());
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);

        foreach (long seq in new long[] { 0, 127, 128, 65536, 4294967295 })
        {
            JsonObject reply = await client.SendAsync(Invoke("ping", ["x"], seq: seq));
            Assert.Equal(2, reply["type"]!.GetValue<int>());
            Assert.Equal(seq, reply["seq"]!.GetValue<long>());
        }
    }

    [Fact]
    public async Task GarbageMessages_AreDropped_AndTheServerServesOn()
    {
        await using var server = StartServer(new TestDispatcher());
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);
        string[][] garbage =
        [
            ["47415242414745", "", ""],                 // "GARBAGE" type
            ["5550504552"],                             // UPPER alone
            ["5550504552", "c1", "00"],                 // header is not msgpack
            ["5550504552", "81a474797065 01", "80"],    // header map without meth/okey/seq
            ["5550504552", "", "", "", ""],             // too many frames
        ];
        foreach (string[] frames in garbage)
        {
            await client.SendAsync(new { op = "raw", frames = frames.Select(f => f.Replace(" ", "", StringComparison.Ordinal)).ToArray() });
        }

        await Eventually.WaitAsync(() => server.DroppedMessages >= garbage.Length, "the server to drop every garbage message");
        JsonObject reply = await client.SendAsync(Invoke("ping", ["after garbage"]));
        Assert.Equal("after garbage", reply["result"]!.GetValue<string>());
        Assert.Equal(garbage.Length, server.DroppedMessages);
    }

    [Fact]
    public async Task UndecodableFunctionBody_AnswersErrorForThatRequest()
    {
        await using var server = StartServer(new TestDispatcher());
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);

        // A body document that is a msgpack string, not {"args", "kwargs"}.
        JsonObject reply = await client.SendAsync(new { op = "invoke", method = "ping", okey = new { str = "" }, body_hex = "a3616263", timeout = 120 });

        Assert.Equal(4, reply["type"]!.GetValue<int>());
        Assert.Equal("TypeError", reply["name"]!.GetValue<string>());
        Assert.Contains("not a map with args and kwargs", reply["repr"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task TwoSlowCalls_ReplyInCompletionOrder()
    {
        var dispatcher = new TestDispatcher();
        await using var server = StartServer(dispatcher);
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);

        await client.SendAsync(new { op = "send", method = "gate", args = new object[] { "first" }, okey = new { str = "" } });
        await client.SendAsync(new { op = "send", method = "gate", args = new object[] { "second" }, okey = new { str = "" } });
        await dispatcher.Started("first").WaitAsync(Long);
        await dispatcher.Started("second").WaitAsync(Long);
        dispatcher.Open("second");
        JsonObject firstReply = await client.SendAsync(new { op = "recv", timeout = 120 });
        dispatcher.Open("first");
        JsonObject secondReply = await client.SendAsync(new { op = "recv", timeout = 120 });

        Assert.Equal("second", firstReply["result"]!.GetValue<string>());
        Assert.Equal(1, firstReply["seq"]!.GetValue<long>());
        Assert.Equal("first", secondReply["result"]!.GetValue<string>());
        Assert.Equal(0, secondReply["seq"]!.GetValue<long>());
    }

    [Fact]
    public async Task FiveMebibyteBinaryArgument_RoundTrips()
    {
        await using var server = StartServer(new TestDispatcher());
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);
        byte[] data = RandomNumberGenerator.GetBytes(5 * 1024 * 1024);

        JsonObject reply = await client.SendAsync(Invoke("echo", [new Dictionary<string, string> { ["$bin"] = Convert.ToBase64String(data) }]));

        Assert.Equal(2, reply["type"]!.GetValue<int>());
        byte[] echoed = Convert.FromBase64String(reply["result"]!["$bin"]!.GetValue<string>());
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(echoed));
    }

    [Fact]
    public async Task Dispose_ReleasesThePort()
    {
        string endpoint;
        await using (var server = StartServer(new TestDispatcher()))
        {
            endpoint = server.Endpoint;
        }
        var port = int.Parse(endpoint[(endpoint.LastIndexOf(':') + 1)..], System.Globalization.CultureInfo.InvariantCulture);

        // NetMQ closes the listener on its own I/O thread shortly after Dispose returns.
        CallosumRpcServer again = (await Eventually.WaitAsync<CallosumRpcServer?>(() =>
        {
            try
            {
                return StartServer(new TestDispatcher(), $"tcp://127.0.0.1:{port}");
            }
            catch (IOException)
            {
                return null;
            }
        }, s => s is not null, $"port {port} to be free again"))!;
        await using (again)
        {
            await using var client = await PythonCallosumClient.StartAsync(again.Endpoint);
            Assert.True((await client.SendAsync(new { op = "handshake", timeout = 60 }))["ok"]!.GetValue<bool>());
        }
    }

    [Fact]
    public async Task Dispose_CancelsRunningHandlers_AndAnswersThemCancelled()
    {
        var dispatcher = new TestDispatcher();
        var server = StartServer(dispatcher);
        await using var client = await PythonCallosumClient.StartAsync(server.Endpoint);
        long seq = (await client.SendAsync(new { op = "send", method = "slow", args = Array.Empty<object>(), okey = new { str = "" } }))["seq"]!.GetValue<long>();
        await dispatcher.SlowStarted.Task.WaitAsync(Long);

        await server.DisposeAsync();
        JsonObject reply = await client.SendAsync(new { op = "recv", method = "slow", okey = new { str = "" }, seq, timeout = 60 });

        Assert.True(dispatcher.SlowSawCancellation.Task.IsCompleted);
        Assert.Equal(6, reply["type"]!.GetValue<int>());
    }

    [Fact]
    public async Task Curve_PyzmqClientWithTheAgentKeyIsServed_OneWithAnotherServerKeyIsNot()
    {
        string dir = Directory.CreateTempSubdirectory("ka-rpc-curve-").FullName;
        try
        {
            // Certificates as Backend.AI's fixtures are made: pyzmq's zmq.auth.create_certificates.
            await RunPythonAsync($"import zmq.auth; zmq.auth.create_certificates('{dir}', 'agent'); zmq.auth.create_certificates('{dir}', 'manager')");
            var curve = CallosumCurveOptions.FromFiles(Path.Combine(dir, "agent.key_secret"), Path.Combine(dir, "manager.key"));
            ZmqCertificateFile manager = ZmqCertificateFile.Load(Path.Combine(dir, "manager.key_secret"));
            await using var server = StartServer(new TestDispatcher(), curve: curve);

            await using (var client = await PythonCallosumClient.StartAsync(server.Endpoint, $"--server-public-key={curve.ServerCertificate.PublicKeyZ85}",
                $"--client-public-key={manager.PublicKeyZ85}", $"--client-secret-key={manager.SecretKeyZ85}"))
            {
                Assert.True((await client.SendAsync(new { op = "handshake", timeout = 60 }))["ok"]!.GetValue<bool>());
                Assert.Equal("over curve", (await client.SendAsync(Invoke("ping", ["over curve"])))["result"]!.GetValue<string>());
            }
            await using (var wrongKey = await PythonCallosumClient.StartAsync(server.Endpoint, $"--server-public-key={manager.PublicKeyZ85}"))
            {
                Assert.False((await wrongKey.SendAsync(new { op = "handshake", timeout = 3 }))["ok"]!.GetValue<bool>());
            }
            await using (var plain = await PythonCallosumClient.StartAsync(server.Endpoint))
            {
                Assert.False((await plain.SendAsync(new { op = "handshake", timeout = 3 }))["ok"]!.GetValue<bool>());
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void CertificateFile_WithMismatchedKeys_IsRefusedNamingTheProblem()
    {
        const string text = "curve\n    public-key = \"GqK]ZYY#h*9jAQbGxSwkeZX3Y*%b+DiY$7ju6sh{\"\n    secret-key = \"+}m(bh:DVcD]Xp)Xp8tm-b%N0{qXO/KffjD}2J9Q\"\n";

        var error = Assert.Throws<InvalidDataException>(() => ZmqCertificateFile.Parse(text, "agent.key_secret"));

        Assert.Contains("does not belong to secret-key", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void BindingATakenPort_FailsWithTheEndpointNamed()
    {
        using var listener = new TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;

        var error = Assert.Throws<IOException>(() => StartServer(new TestDispatcher(), $"tcp://127.0.0.1:{port}"));

        Assert.Contains($"tcp://127.0.0.1:{port}", error.Message, StringComparison.Ordinal);
    }

    private static Dictionary<string, object> Tagged(string tag, object value) => new() { [tag] = value };

    private static async Task RunPythonAsync(string code)
    {
        var start = new ProcessStartInfo(PythonCallosumClient.Python) { RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(code);
        using var process = Process.Start(start)!;
        string stderr = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, stderr);
    }
}
