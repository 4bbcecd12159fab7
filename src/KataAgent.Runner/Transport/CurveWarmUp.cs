using System.Security.Cryptography;
using NetMQ;

namespace KataAgent.Runner.Transport;

/// <summary>
/// Loads the crypto the first CURVE handshake needs while the runner is still starting up.
/// </summary>
/// <remarks>
/// The server's first WELCOME draws random bytes, which makes .NET load OpenSSL (libssl and libcrypto),
/// and runs the NaCl code for the first time. Inside gVisor that first load costs tens of milliseconds
/// (every mapping and page fault goes through the Sentry) and would otherwise sit on the agent's
/// create path between its HELLO and our WELCOME. Done on a thread of its own, it overlaps with binding
/// the sockets and with the agent's connect retries.
/// </remarks>
internal static class CurveWarmUp
{
    public static void Start() =>
        new Thread(Run) { IsBackground = true, Name = "curve-warm-up" }.Start();

    private static void Run()
    {
        try
        {
            Span<byte> sample = stackalloc byte[32];
            RandomNumberGenerator.Fill(sample);
            // A throw-away key pair runs the same Curve25519 code the handshake runs.
            _ = new NetMQCertificate();
        }
        catch (Exception exception) when (exception is CryptographicException or PlatformNotSupportedException)
        {
            // The handshake will hit the same problem and report it; warming up is only an optimisation.
            Log.Debug($"CURVE warm-up failed: {exception.Message}");
        }
    }
}
