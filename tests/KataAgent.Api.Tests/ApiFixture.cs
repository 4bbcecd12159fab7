using KataAgent.Api.Client;
using KataAgent.Api.Server;
using KataAgent.Core;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Api.Tests;

/// <summary>
/// A real agent (a <see cref="TestAgentHost"/>: own private containerd, data dir, CNI bridge and subnet 10.202.X.0/24
/// without masquerading, own port range) with the python base image, served on a temp unix socket and on a token-protected
/// TCP port of 127.0.0.1. Torn down with everything it made.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "xunit disposes the host through IAsyncLifetime.DisposeAsync")]
public sealed class ApiFixture : IAsyncLifetime
{
    public const string Token = "test-token-0123456789";

    // Ports 20000 + 25 * index for indexes 0-199 (20000-24999): below the CLI (25000+) and core (27680+) fixtures' ports.
    private static readonly TestNetworkPlan Plan = new("kapi", SubnetOctet: 202, PortBase: 20000, PortsPerIndex: 25, FirstIndex: 0, IndexCount: 200);

    private readonly TestAgentHost _host = new("kapi", Plan);

    public string DataDir => _host.DataDir;
    public int Index => _host.Network.Index;
    public string BridgeName => _host.Network.Name;
    public Agent Agent => _host.Agent;
    public ApiServer Server { get; private set; } = null!;
    public string ImageName => _host.ImageName;
    public string SocketPath => Path.Combine(DataDir, "api.sock");

    public async Task InitializeAsync()
    {
        await _host.StartAsync(_host.CommonOptions("api-test-agent", "kata-agent-api-test"));
        Server = await StartServerAsync(SocketPath, tcp: true);
    }

    public Task<ApiServer> StartServerAsync(string socketPath, bool tcp) =>
        ApiServer.StartAsync(Agent, new ApiServerOptions
        {
            SocketPath = socketPath,
            TcpListen = tcp ? "127.0.0.1:0" : "",
            Token = tcp ? Token : "",
            ShutdownTimeout = TimeSpan.FromSeconds(30),
        }, NullLoggerFactory.Instance);

    public ApiClient UnixClient() => ApiClient.ForUnixSocket(SocketPath);

    public ApiClient TcpClient(string? token) => ApiClient.ForTcp(new Uri($"http://{Server.TcpEndpoint}"), token);

    public async Task DisposeAsync()
    {
        if (Server is not null)
            await Server.DisposeAsync();
        await _host.DisposeAsync();
    }
}
