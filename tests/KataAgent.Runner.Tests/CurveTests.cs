using System.Text;
using KataAgent.Runner.Protocol;
using NetMQ;
using NetMQ.Sockets;

namespace KataAgent.Runner.Tests;

/// <summary>
/// A runner started with runner-curve.json talks only to clients that know its public key: others
/// (the NULL mechanism, or CURVE with another server key) can neither run code nor read output.
/// </summary>
[Collection(RunnerCollection.Name)]
public sealed class CurveTests(PublishedRunner runner, Xunit.Abstractions.ITestOutputHelper output)
{
    /// <summary>How long an intruder listens for an answer: far beyond a local round trip.</summary>
    private static readonly TimeSpan Silence = TimeSpan.FromSeconds(3);

    [Fact]
    public async Task The_client_holding_the_runner_key_is_served()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, curve: true);
        CancellationToken limit = RunnerTestHelpers.Limit();

        await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "x = 1", limit);
        ExecutionResult result = await host.Client.ExecuteToStatusAsync("r2", ExecutionMode.Query, "print(x + 1)", limit);

        Assert.True(result.Status == ExecutionStatus.Finished && result.Text("stdout") == "2\n", result.Describe());
        Assert.Equal("idle", (await host.Client.GetStatusAsync(limit))["status"]);
        Assert.Contains("CURVE", host.Log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Clients_without_the_runner_key_get_no_answer_and_run_nothing()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, curve: true);
        CancellationToken limit = RunnerTestHelpers.Limit();
        string marker = Path.Combine(host.Root, "intruder-was-here");
        await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "secret = 41", limit);

        foreach ((string name, byte[]? serverKey) in new[] { ("NULL mechanism", (byte[]?)null), ("another runner's key", new NetMQCertificate().PublicKey) })
        {
            using var intruder = new Intruder(host.InputPort, host.OutputPort, serverKey);
            intruder.Send("status", "");
            intruder.Send("code", $"secret = 0\nintruder = 1\nopen({PythonString(marker)}, 'w').write('x')");
            intruder.Send("get-apps", "");
            intruder.Send("exec", $"touch {marker}");

            List<string> answers = intruder.ReceiveFor(Silence);
            Assert.True(answers.Count == 0, $"{name}: the runner answered {string.Join(", ", answers)}");
        }

        ExecutionResult check = await host.Client.ExecuteToStatusAsync("r2", ExecutionMode.Query,
            $"import os\nprint(secret, 'intruder' in globals(), os.path.exists({PythonString(marker)}))", limit);
        Assert.True(check.Text("stdout") == "41 False False\n", check.Describe());

        // Control: the same intruder code holding the runner's public key is answered, so the silence
        // above came from the key and not from the harness.
        using var insider = new Intruder(host.InputPort, host.OutputPort, NetMQCertificate.FromPublicKey(host.Curve!.RunnerPublicKey).PublicKey);
        Assert.True(insider.AskStatus(TimeSpan.FromSeconds(60)), "a client holding the runner's public key got no status");
    }

    [Fact]
    public async Task Output_goes_only_to_the_client_holding_the_runner_key_and_arrives_whole_while_intruders_keep_connecting()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, curve: true, sequenced: true);
        CancellationToken limit = RunnerTestHelpers.Limit();
        const int Lines = 300;
        string expected = string.Concat(Enumerable.Range(0, Lines).Select(i => $"line {i}\n")) + "end\n";

        var stolen = new List<string>();
        ExecutionResult result;
        using (var withoutCurve = new Intruder(host.InputPort, host.OutputPort, serverKey: null))
        using (var wrongKey = new Intruder(host.InputPort, host.OutputPort, new NetMQCertificate().PublicKey))
        {
            // Both keep reconnecting (every 100 ms) for the whole run, its end included. NetMQ attaches each of them to
            // the runner's PUSH socket at TCP accept, before the handshake they fail, and a message routed to them then
            // is dropped (runner README): the client sees the gap in the sequence numbers, or silence where the end
            // should be, and asks for a replay.
            result = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query,
                $"import time\nfor i in range({Lines}):\n    print('line', i, flush=True)\n    time.sleep(0.01)\nprint('end', flush=True)",
                limit, new ExecutionOptions { ExecTimeout = TimeSpan.FromSeconds(120) });
            stolen.AddRange(withoutCurve.ReceiveFor(Silence));
            stolen.AddRange(wrongKey.ReceiveFor(TimeSpan.Zero));
        }

        output.WriteLine($"replays asked: {host.Client.ReplayRequests}, duplicates dropped: {host.Client.DuplicatesDropped}");
        Assert.True(stolen.Count == 0, $"an intruder received {string.Join(", ", stolen)}");
        Assert.True(result.Status == ExecutionStatus.Finished && result.ExitCode == 0, result.Describe());
        // Complete, in order, nothing twice.
        Assert.Equal(expected, result.Text("stdout"));
        Assert.Equal(0, host.Client.LostMessages);

        ExecutionResult after = await host.Client.ExecuteToStatusAsync("r2", ExecutionMode.Query, "print('after')", limit);
        Assert.True(after.Status == ExecutionStatus.Finished && after.Text("stdout") == "after\n", after.Describe());
    }

    [Fact]
    public async Task A_runner_with_an_unusable_key_file_refuses_to_start()
    {
        string root = Directory.CreateTempSubdirectory("kata-runner-test-").FullName;
        try
        {
            string configDir = Directory.CreateDirectory(Path.Combine(root, "config")).FullName;
            File.WriteAllText(Path.Combine(configDir, RunnerCurveKeys.RunnerFileName), """{"runnerSecretKey": "not a key"}""");
            var start = new System.Diagnostics.ProcessStartInfo(runner.BinaryPath, ["--config-dir", configDir])
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
            };
            using var process = System.Diagnostics.Process.Start(start)!;
            Task<string> errors = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync(RunnerTestHelpers.Limit(60));

            // Never a silent fallback to the NULL mechanism.
            Assert.Equal(2, process.ExitCode);
            Assert.Contains(RunnerCurveKeys.RunnerFileName, await errors, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private static string PythonString(string text) => "'" + text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal) + "'";

    /// <summary>A raw client of the runner's ports: NULL mechanism, or CURVE with the given server key.</summary>
    private sealed class Intruder : IDisposable
    {
        private readonly PushSocket _push = new();
        private readonly PullSocket _pull = new();

        public Intruder(int inputPort, int outputPort, byte[]? serverKey)
        {
            foreach (NetMQSocket socket in new NetMQSocket[] { _push, _pull })
            {
                socket.Options.Linger = TimeSpan.Zero;
                if (serverKey is not null)
                {
                    socket.Options.CurveServerKey = serverKey;
                    socket.Options.CurveCertificate = new NetMQCertificate();
                }
            }
            _pull.Connect($"tcp://127.0.0.1:{outputPort}");
            _push.Connect($"tcp://127.0.0.1:{inputPort}");
        }

        /// <summary>Queued on the connecting socket; it only leaves once a handshake succeeds.</summary>
        public void Send(string type, string payload)
        {
            var message = new NetMQMessage(2);
            message.Append(Encoding.ASCII.GetBytes(type));
            message.Append(Encoding.UTF8.GetBytes(payload));
            _ = _push.TrySendMultipartMessage(TimeSpan.FromSeconds(5), message);
        }

        /// <summary>The types of every message that arrives within <paramref name="window"/>.</summary>
        public List<string> ReceiveFor(TimeSpan window)
        {
            var types = new List<string>();
            DateTime end = DateTime.UtcNow + window;
            var message = new NetMQMessage();
            do
            {
                if (_pull.TryReceiveMultipartMessage(TimeSpan.FromMilliseconds(100), ref message))
                {
                    types.Add(message[0].ConvertToString(Encoding.ASCII));
                }
            }
            while (DateTime.UtcNow < end);
            return types;
        }

        /// <summary>
        /// Sends `status` until one answer arrives here: the runner's PUSH deals its messages round-robin
        /// over every peer that holds the key, the agent's client included.
        /// </summary>
        public bool AskStatus(TimeSpan limit)
        {
            DateTime end = DateTime.UtcNow + limit;
            while (DateTime.UtcNow < end)
            {
                Send("status", "");
                if (ReceiveFor(TimeSpan.FromSeconds(1)).Contains("status"))
                {
                    return true;
                }
            }
            return false;
        }

        public void Dispose()
        {
            _push.Dispose();
            _pull.Dispose();
        }
    }
}
