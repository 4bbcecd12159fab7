using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Xunit;

namespace KataAgent.Testing;

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
        var dir = Path.Combine("/tmp", "ka-registry-" + Guid.NewGuid().ToString("N")[..8]);
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
              secret: kata-agent-test
            """);
        var process = Process.Start(new ProcessStartInfo(Binary) { ArgumentList = { "serve", config }, RedirectStandardError = true, RedirectStandardOutput = true })!;
        _ = process.StandardError.ReadToEndAsync();
        _ = process.StandardOutput.ReadToEndAsync();
        var registry = new LocalRegistry(process, dir, port);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        try
        {
            var answer = await Eventually.WaitAsync(async () =>
                {
                    if (process.HasExited)
                        return $"exited with {process.ExitCode}";
                    try
                    {
                        using var response = await http.GetAsync(new Uri($"http://{registry.Host}/v2/"));
                        return response.IsSuccessStatusCode ? "up" : $"HTTP {(int)response.StatusCode}";
                    }
                    catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                    {
                        return e.Message;
                    }
                },
                state => state == "up" || state.StartsWith("exited", StringComparison.Ordinal), $"docker-registry to answer on {registry.Host}/v2/");
            if (answer == "up")
                return registry;
            throw new InvalidOperationException($"docker-registry {answer}");
        }
        catch (Exception)
        {
            await registry.DisposeAsync();
            throw;
        }
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
