using System.Globalization;
using KataAgent.Api.Client;
using KataAgent.Api.Server;
using KataAgent.Core;
using KataAgent.Images;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Api.Tests;

/// <summary>
/// A real agent (own private containerd, data dir, CNI bridge and subnet 10.202.X.0/24 without masquerading,
/// own port range) with the python base image, served on a temp unix socket and on a token-protected
/// TCP port of 127.0.0.1. Torn down with everything it made.
/// </summary>
public sealed class ApiFixture : IAsyncLifetime
{
    public const string Token = "test-token-0123456789";
    private static int _instances;

    public string DataDir { get; } = Path.Combine("/tmp", "kapi-" + Guid.NewGuid().ToString("N")[..8]);
    public int Index { get; } = FreeIndex((Environment.ProcessId % 50) * 4 + Interlocked.Increment(ref _instances) % 4);
    public string BridgeName => "kapi" + Index.ToString(CultureInfo.InvariantCulture);
    public Agent Agent { get; private set; } = null!;
    public ApiServer Server { get; private set; } = null!;
    public string ImageName { get; private set; } = "";
    public string SocketPath => Path.Combine(DataDir, "api.sock");

    public async Task InitializeAsync()
    {
        var options = new AgentOptions
        {
            AgentId = "api-test-agent",
            DataDir = DataDir,
            Namespace = "kata-agent-api-test",
            DefaultRuntimeClass = "runc",
            AllowedRuntimeClasses = ["kata", "gvisor", "runc"],
            RunnerDir = RunnerLocation.Directory(),
            // Below the kernel's ephemeral range (32768+): a published port there can capture (DNAT) some other
            // loopback connection that happened to get the same ephemeral port, e.g. NetMQ's internal signaler pair.
            PortRangeStart = 20000 + Index * 25,
            PortRangeEnd = 20000 + Index * 25 + 24,
            NetworkName = BridgeName,
            BridgeName = BridgeName,
            Subnet = $"10.202.{Index}.0/24",
            IpMasquerade = false,
            NetnsPrefix = BridgeName + "-",
            RunnerReadyTimeout = TimeSpan.FromSeconds(90),
            StopGracePeriod = TimeSpan.FromSeconds(5),
        };
        Agent = await Agent.StartAsync(options, NullLoggerFactory.Instance);
        var built = await new BaseImageBuilder().BuildPythonAsync();
        ImageName = (await new ImageImporter(Agent.Containerd).ImportAsync(built.ArchivePath)).Single().Name;
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

    // Skips indexes whose bridge exists: another copy of these tests (a CI run beside a developer's) may hold it.
    private static int FreeIndex(int start)
    {
        for (var i = 0; i < 200; i++)
        {
            var candidate = (start + i * 7) % 200;
            if (!Directory.Exists($"/sys/class/net/kapi{candidate}"))
                return candidate;
        }
        return start % 200;
    }

    public ApiClient UnixClient() => ApiClient.ForUnixSocket(SocketPath);

    public ApiClient TcpClient(string? token) => ApiClient.ForTcp(new Uri($"http://{Server.TcpEndpoint}"), token);

    public async Task DisposeAsync()
    {
        if (Server is not null)
            await Server.DisposeAsync();
        if (Agent is not null)
        {
            foreach (var session in Agent.Sessions)
            {
                try
                {
                    await Agent.DestroySessionAsync(session.KernelId);
                }
                catch (Exception)
                {
                    // keep tearing down
                }
            }
            await Reaper.ReapNamespaceAsync(Agent.Containerd, CancellationToken.None);
            await Agent.DisposeAsync();
        }
        await HostNetwork.DeleteLinkAsync(BridgeName);
        Mounts.UnmountAllUnder(DataDir);
        try
        {
            Directory.Delete(DataDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
