using System.Globalization;

namespace KataAgent.BackendAi.Tests.Infrastructure;

/// <summary>
/// Debian's etcd (3.4) as a one-member cluster on 127.0.0.1 (free client and peer ports), data in its temp dir.
/// <see cref="Endpoint"/> is what dotnet-etcd and Backend.AI's etcd.addr take.
/// </summary>
public sealed class EtcdServer : ServerProcess
{
    public const string BinaryPath = "/usr/bin/etcd";

    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(2) };

    private EtcdServer(int clientPort, int peerPort)
        : base("etcd")
    {
        ClientPort = clientPort;
        PeerPort = peerPort;
    }

    public int ClientPort { get; }

    public int PeerPort { get; }

    public string Endpoint => $"http://127.0.0.1:{ClientPort}";

    protected override string Binary => BinaryPath;

    protected override IReadOnlyList<string> Arguments
    {
        get
        {
            var client = $"http://127.0.0.1:{ClientPort.ToString(CultureInfo.InvariantCulture)}";
            var peer = $"http://127.0.0.1:{PeerPort.ToString(CultureInfo.InvariantCulture)}";
            return
            [
                "--name", "test", "--data-dir", Path.Combine(DataDir, "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", $"test={peer}", "--initial-cluster-state", "new",
                "--logger", "zap", "--log-level", "warn",
            ];
        }
    }

    public static async Task<EtcdServer> StartNewAsync(CancellationToken cancellationToken = default)
    {
        Skip.IfNot(File.Exists(BinaryPath), $"needs {BinaryPath} (Debian package etcd-server; scripts/setup.sh installs it)");
        for (var attempt = 1; ; attempt++)
        {
            var server = new EtcdServer(FreePort(), FreePort());
            try
            {
                await server.StartAsync(cancellationToken);
                return server;
            }
            catch (Exception) when (attempt < 3)
            {
                await server.DisposeAsync();
            }
            catch
            {
                await server.DisposeAsync();
                throw;
            }
        }
    }

    protected override async Task<bool> ProbeAsync(CancellationToken cancellationToken)
    {
        try
        {
            // /health says true only once the member has a leader and serves requests.
            var body = await Http.GetStringAsync($"{Endpoint}/health", cancellationToken);
            return body.Contains("\"health\":\"true\"", StringComparison.Ordinal);
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }
}
