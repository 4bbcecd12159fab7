using System.Text.Json;
using NetMQ;

namespace KataAgent.Runner.Protocol;

/// <summary>
/// The agent's half of a session's ZeroMQ CURVE keys (Z85 text, 40 characters each): the runner's
/// public key, which the client must know to complete the handshake, and the agent's own key pair.
/// <para>
/// NetMQ 4.0.4.5 has no ZAP: a CURVE server accepts any client key pair (its CurveServerMechanism
/// reads the client's long-term key from INITIATE and never checks it — "Stonehouse"). So the runner
/// cannot admit only <see cref="AgentPublicKey"/>; what keeps others out is that only the agent (and
/// the session itself, through its config dir) knows <see cref="RunnerPublicKey"/>. Treat it as a secret.
/// </para>
/// </summary>
public sealed record RunnerCurveKeys
{
    /// <summary>The runner's key file in the session's config dir (mounted read-only at /home/config).</summary>
    public const string RunnerFileName = "runner-curve.json";

    public required string RunnerPublicKey { get; init; }
    public required string AgentPublicKey { get; init; }
    public required string AgentSecretKey { get; init; }

    /// <summary>The client's long-term key pair.</summary>
    public NetMQCertificate AgentCertificate() => new(AgentSecretKey, AgentPublicKey);

    /// <summary>
    /// Two fresh key pairs: what the agent keeps, and the JSON of <see cref="RunnerFileName"/>
    /// (<c>{runnerSecretKey, runnerPublicKey, agentPublicKey}</c>) that only the runner gets.
    /// </summary>
    public static (RunnerCurveKeys Agent, string RunnerFile) Generate()
    {
        var runner = new NetMQCertificate();
        var agent = new NetMQCertificate();
        var keys = new RunnerCurveKeys
        {
            RunnerPublicKey = runner.PublicKeyZ85,
            AgentPublicKey = agent.PublicKeyZ85,
            AgentSecretKey = SecretOf(agent),
        };
        return (keys, RunnerFile(SecretOf(runner), runner.PublicKeyZ85, agent.PublicKeyZ85));
    }

    /// <summary>The JSON of <see cref="RunnerFileName"/>.</summary>
    public static string RunnerFile(string runnerSecretKey, string runnerPublicKey, string agentPublicKey)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("runnerSecretKey", runnerSecretKey);
            writer.WriteString("runnerPublicKey", runnerPublicKey);
            writer.WriteString("agentPublicKey", agentPublicKey);
            writer.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>
    /// Rebuilds the agent's keys from a runner key file when the agent's own copy is lost. The agent
    /// gets a fresh key pair: the runner cannot check client keys anyway (see the type's remarks).
    /// </summary>
    public static RunnerCurveKeys FromRunnerFile(string json)
    {
        using JsonDocument document = JsonDocument.Parse(json);
        string secret = document.RootElement.GetProperty("runnerSecretKey").GetString()
            ?? throw new JsonException("runnerSecretKey is null");
        NetMQCertificate runner = NetMQCertificate.CreateFromSecretKey(secret);
        var agent = new NetMQCertificate();
        return new RunnerCurveKeys
        {
            RunnerPublicKey = runner.PublicKeyZ85,
            AgentPublicKey = agent.PublicKeyZ85,
            AgentSecretKey = SecretOf(agent),
        };
    }

    private static string SecretOf(NetMQCertificate certificate) =>
        certificate.SecretKeyZ85 ?? throw new InvalidOperationException("a generated certificate has no secret key");

    /// <summary>Keeps the keys out of logs and exception messages.</summary>
    public override string ToString() => "RunnerCurveKeys { (not shown) }";
}
