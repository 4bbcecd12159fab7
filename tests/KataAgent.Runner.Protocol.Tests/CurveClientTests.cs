using System.Text.Json;
using NetMQ;

namespace KataAgent.Runner.Protocol.Tests;

/// <summary>The client as a CURVE client: it talks to the runner holding the expected key and to no other.</summary>
public sealed class CurveClientTests
{
    [Fact]
    public async Task Generated_keys_fit_together_and_the_client_talks_to_the_runner_holding_them()
    {
        (RunnerCurveKeys keys, string runnerFile) = RunnerCurveKeys.Generate();
        using JsonDocument file = JsonDocument.Parse(runnerFile);
        string runnerSecret = file.RootElement.GetProperty("runnerSecretKey").GetString()!;
        Assert.Equal(keys.RunnerPublicKey, NetMQCertificate.CreateFromSecretKey(runnerSecret).PublicKeyZ85);
        Assert.Equal(keys.RunnerPublicKey, file.RootElement.GetProperty("runnerPublicKey").GetString());
        Assert.Equal(keys.AgentPublicKey, file.RootElement.GetProperty("agentPublicKey").GetString());
        Assert.DoesNotContain(keys.AgentSecretKey, runnerFile, StringComparison.Ordinal);
        Assert.DoesNotContain(keys.RunnerPublicKey, keys.ToString(), StringComparison.Ordinal);

        using var runner = new FakeRunner(NetMQCertificate.CreateFromSecretKey(runnerSecret));
        await using var client = new KernelRunnerClient(new KernelRunnerClientOptions
        {
            InputPort = runner.InputPort,
            OutputPort = runner.OutputPort,
            Curve = keys,
            ReplyTimeout = TimeSpan.FromSeconds(60),
        });
        Task<IReadOnlyDictionary<string, object?>> status = client.GetStatusAsync();
        Assert.Equal("status", runner.Receive().Type);
        runner.Send("status", [0x81, 0xA1, (byte)'s', 0x01]); // msgpack {"s": 1}
        Assert.Equal(1L, Convert.ToInt64((await status)["s"], System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public async Task A_runner_without_the_expected_key_gets_nothing_and_the_timeout_names_the_key()
    {
        (RunnerCurveKeys keys, _) = RunnerCurveKeys.Generate();
        using var impostor = new FakeRunner(new NetMQCertificate());
        await using var client = new KernelRunnerClient(new KernelRunnerClientOptions
        {
            InputPort = impostor.InputPort,
            OutputPort = impostor.OutputPort,
            Curve = keys,
            ReplyTimeout = TimeSpan.FromSeconds(3),
        });

        // The failed handshake shows as a dropped connection, or as silence until the reply timeout.
        Exception error = await Assert.ThrowsAnyAsync<Exception>(() => client.GetStatusAsync());
        Assert.True(error is TimeoutException or RunnerUnavailableException, error.ToString());
        Assert.Contains("this session's key", error.Message, StringComparison.Ordinal);
        Assert.False(impostor.TryReceive(TimeSpan.FromSeconds(1)), "the client handed a message to a runner without the key");
    }
}
