using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace KataAgent.Api.Tests;

/// <summary>Debian's docker-registry on 127.0.0.1 with storage in a temp dir; disposing stops it and removes the dir.</summary>
public sealed class LocalRegistry : IAsyncDisposable
{
    public const string Binary = "/usr/bin/docker-registry";
    private readonly Process _process;
    private readonly string _dir;

    private LocalRegistry(Process process, string dir, int port)
    {
        _process = process;
        _dir = dir;
        Host = $"127.0.0.1:{port}";
    }

    /// <summary>host:port as image references name it.</summary>
    public string Host { get; }

    public static async Task<LocalRegistry> StartAsync()
    {
        Skip.IfNot(File.Exists(Binary), $"needs {Binary} (Debian package docker-registry)");
        var dir = Path.Combine("/tmp", "kapi-registry-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }
        var config = Path.Combine(dir, "config.yml");
        await File.WriteAllTextAsync(config, $"""
            version: 0.1
            log:
              level: warn
            storage:
              filesystem:
                rootdirectory: {dir}/data
            http:
              addr: 127.0.0.1:{port}
              secret: api-test
            """);
        var process = Process.Start(new ProcessStartInfo(Binary) { ArgumentList = { "serve", config }, RedirectStandardError = true, RedirectStandardOutput = true })!;
        _ = process.StandardError.ReadToEndAsync();
        _ = process.StandardOutput.ReadToEndAsync();
        var registry = new LocalRegistry(process, dir, port);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        for (var attempt = 0; attempt < 100; attempt++)
        {
            try
            {
                using var response = await http.GetAsync(new Uri($"http://{registry.Host}/v2/"));
                if (response.IsSuccessStatusCode)
                    return registry;
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException)
            {
            }
            if (process.HasExited)
                break;
            await Task.Delay(100);
        }
        await registry.DisposeAsync();
        throw new InvalidOperationException("docker-registry did not come up");
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
            _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
        _process.Dispose();
        Directory.Delete(_dir, recursive: true);
    }
}
