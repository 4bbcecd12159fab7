using System.Text.RegularExpressions;
using NetMQ;

namespace KataAgent.BackendAi.Rpc;

/// <summary>
/// A ZeroMQ CURVE certificate file as pyzmq's <c>zmq.auth.create_certificates</c> writes it and Backend.AI configures
/// it (<c>rpc-auth-agent-keypair</c>, <c>rpc-auth-manager-public-key</c>): ZPL text with <c>public-key = "&lt;z85&gt;"</c>
/// and, in the secret file, <c>secret-key = "&lt;z85&gt;"</c> under the <c>curve</c> section.
/// </summary>
public sealed partial record ZmqCertificateFile(string PublicKeyZ85, string? SecretKeyZ85)
{
    /// <summary>Reads a certificate file; throws <see cref="InvalidDataException"/> naming the file and the problem.</summary>
    public static ZmqCertificateFile Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"{path}: cannot read the CURVE certificate: {exception.Message}", exception);
        }
        return Parse(text, path);
    }

    public static ZmqCertificateFile Parse(string text, string source)
    {
        string? section = null;
        string? publicKey = null, secretKey = null;
        foreach (string rawLine in text.Split('\n'))
        {
            string line = rawLine.TrimEnd('\r');
            if (line.TrimStart().StartsWith('#') || line.Trim().Length == 0)
                continue;
            if (!char.IsWhiteSpace(line[0]))
            {
                section = line.Trim();
                continue;
            }
            Match entry = KeyLine().Match(line);
            if (section != "curve" || !entry.Success)
                continue;
            string value = entry.Groups["value"].Value;
            if (entry.Groups["name"].Value == "public-key")
                publicKey = value;
            else
                secretKey = value;
        }
        if (publicKey is null)
            throw new InvalidDataException($"{source}: no public-key under curve (not a ZeroMQ CURVE certificate)");
        CheckZ85Key(publicKey, "public-key", source);
        if (secretKey is not null)
        {
            CheckZ85Key(secretKey, "secret-key", source);
            string derived = NetMQCertificate.CreateFromSecretKey(secretKey).PublicKeyZ85;
            if (derived != publicKey)
                throw new InvalidDataException($"{source}: public-key does not belong to secret-key (the secret key's public key is {derived})");
        }
        return new ZmqCertificateFile(publicKey, secretKey);
    }

    /// <summary>The key pair for a CURVE server; throws when the file holds no secret key.</summary>
    public NetMQCertificate ServerCertificate(string source) => SecretKeyZ85 is string secret
        ? new NetMQCertificate(secret, PublicKeyZ85)
        : throw new InvalidDataException($"{source}: holds only a public key; the agent needs its secret certificate (.key_secret)");

    private static void CheckZ85Key(string key, string field, string source)
    {
        if (key.Length != 40)
            throw new InvalidDataException($"{source}: {field} is {key.Length} characters long; a Z85 CURVE key has 40");
        foreach (char c in key)
        {
            if (!Z85Alphabet.Contains(c, StringComparison.Ordinal))
                throw new InvalidDataException($"{source}: {field} has '{c}', which is not a Z85 character");
        }
    }

    private const string Z85Alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

    [GeneratedRegex("""^\s+(?<name>public-key|secret-key)\s*=\s*"(?<value>[^"]*)"\s*$""")]
    private static partial Regex KeyLine();
}
