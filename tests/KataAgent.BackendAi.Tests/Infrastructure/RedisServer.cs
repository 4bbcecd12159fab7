using System.Net.Sockets;
using System.Text;

namespace KataAgent.BackendAi.Tests.Infrastructure;

/// <summary>
/// Debian's redis-server on 127.0.0.1:&lt;free port&gt;, no persistence (no RDB, no AOF), working dir in its temp dir.
/// Usage: <c>await using var redis = await RedisServer.StartNewAsync();</c> then <see cref="ServerProcess.RestartAsync"/>
/// for a restart on the same port (the data is gone afterwards, as after a crash without persistence).
/// </summary>
public sealed class RedisServer : ServerProcess
{
    public const string BinaryPath = "/usr/bin/redis-server";

    private RedisServer(int port, string? password)
        : base("redis")
    {
        Port = port;
        Password = password;
    }

    public int Port { get; }

    public string? Password { get; }

    /// <summary>host:port as Backend.AI's etcd key config/redis/addr holds it.</summary>
    public string Address => $"127.0.0.1:{Port}";

    protected override string Binary => BinaryPath;

    protected override IReadOnlyList<string> Arguments =>
    [
        "--bind", "127.0.0.1", "--port", Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
        "--dir", DataDir, "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
        "--logfile", "", "--databases", "16",
        .. Password is null ? Array.Empty<string>() : ["--requirepass", Password],
    ];

    public static async Task<RedisServer> StartNewAsync(string? password = null, CancellationToken cancellationToken = default)
    {
        Skip.IfNot(File.Exists(BinaryPath), $"needs {BinaryPath} (Debian package redis-server; scripts/setup.sh installs it)");
        for (var attempt = 1; ; attempt++)
        {
            var server = new RedisServer(FreePort(), password);
            try
            {
                await server.StartAsync(cancellationToken);
                return server;
            }
            catch (Exception) when (attempt < 3)
            {
                await server.DisposeAsync(); // port taken in the meantime: another one
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
            using var client = new TcpClient();
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(2));
            await client.ConnectAsync("127.0.0.1", Port, timeout.Token);
            var stream = client.GetStream();
            var command = Password is null ? "PING\r\n" : $"AUTH {Password}\r\nPING\r\n";
            await stream.WriteAsync(Encoding.ASCII.GetBytes(command), timeout.Token);
            var buffer = new byte[256];
            var seen = new StringBuilder();
            while (!seen.ToString().Contains("+PONG", StringComparison.Ordinal))
            {
                var n = await stream.ReadAsync(buffer, timeout.Token);
                if (n == 0)
                    return false;
                seen.Append(Encoding.ASCII.GetString(buffer, 0, n));
                // -LOADING while it reads a dump: not ready yet.
                if (seen.ToString().Contains("-LOADING", StringComparison.Ordinal))
                    return false;
            }
            return true;
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }
}
