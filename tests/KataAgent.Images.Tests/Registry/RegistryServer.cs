using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace KataAgent.Images.Tests.Registry;

/// <summary>
/// Debian's docker-registry (distribution 2.8) serving from a temp dir on 127.0.0.1:&lt;free port&gt;, optionally with
/// htpasswd basic auth. Dispose stops it (kill, wait) and removes the dir.
/// </summary>
public sealed partial class RegistryServer : IAsyncDisposable
{
    public const string Binary = "/usr/bin/docker-registry";

    private readonly Process _process;
    private readonly StringBuilder _log;
    private readonly TempDir _dir;

    private RegistryServer(Process process, StringBuilder log, TempDir dir, int port)
    {
        _process = process;
        _log = log;
        _dir = dir;
        Port = port;
    }

    public int Port { get; }

    /// <summary>host:port as image references name it.</summary>
    public string Host => $"127.0.0.1:{Port}";

    /// <summary>Where the registry keeps blobs: docker/registry/v2/blobs/sha256/&lt;2&gt;/&lt;hex&gt;/data.</summary>
    public string StorageDir => _dir.File("data");

    public string BlobPath(string digest)
    {
        var hex = OciDigest.Hex(digest);
        return Path.Combine(StorageDir, "docker/registry/v2/blobs/sha256", hex[..2], hex, "data");
    }

    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    public static async Task<RegistryServer> StartAsync((string User, string Password)? basicAuth = null, CancellationToken cancellationToken = default)
    {
        Skip.IfNot(File.Exists(Binary), $"needs {Binary} (Debian package docker-registry)");
        for (var attempt = 1; ; attempt++)
        {
            var dir = new TempDir();
            var port = FreePort();
            var config = new StringBuilder($"""
                version: 0.1
                log:
                  level: warn
                  accesslog:
                    disabled: true
                storage:
                  filesystem:
                    rootdirectory: {dir.File("data")}
                  delete:
                    enabled: true
                  maintenance:
                    uploadpurging:
                      enabled: false
                http:
                  addr: 127.0.0.1:{port}
                  secret: kata-agent-test-secret

                """);
            if (basicAuth is { } auth)
            {
                await File.WriteAllTextAsync(dir.File("htpasswd"), $"{auth.User}:{Bcrypt(auth.Password)}\n", cancellationToken);
                config.Append($"""
                    auth:
                      htpasswd:
                        realm: kata-agent-test
                        path: {dir.File("htpasswd")}

                    """);
            }

            await File.WriteAllTextAsync(dir.File("config.yml"), config.ToString(), cancellationToken);
            var log = new StringBuilder();
            var start = new ProcessStartInfo(Binary, ["serve", dir.File("config.yml")])
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
                UseShellExecute = false,
            };
            var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {Binary}");
            process.OutputDataReceived += (_, e) => Append(log, e.Data);
            process.ErrorDataReceived += (_, e) => Append(log, e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var server = new RegistryServer(process, log, dir, port);
            try
            {
                await server.WaitReadyAsync(cancellationToken);
                return server;
            }
            catch (Exception) when (attempt < 3)
            {
                await server.DisposeAsync(); // port taken in the meantime? try another
            }
            catch
            {
                await server.DisposeAsync();
                throw;
            }
        }
    }

    private static void Append(StringBuilder log, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (log)
        {
            if (log.Length < 1 << 20)
            {
                log.AppendLine(line);
            }
        }
    }

    private async Task WaitReadyAsync(CancellationToken cancellationToken)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"docker-registry exited with {_process.ExitCode}: {Log}");
            }

            try
            {
                using var response = await http.GetAsync($"http://{Host}/v2/", cancellationToken);
                if (response.StatusCode is HttpStatusCode.OK or HttpStatusCode.Unauthorized)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
            }

            if (deadline.Elapsed > TimeSpan.FromSeconds(30))
            {
                throw new TimeoutException($"docker-registry on {Host} did not answer within 30 s: {Log}");
            }

            await Task.Delay(50, cancellationToken);
        }
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }

            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await _process.WaitForExitAsync(wait.Token);
        }
        catch (InvalidOperationException)
        {
        }
        finally
        {
            _process.Dispose();
            _dir.Dispose();
        }
    }

    // bcrypt through libxcrypt (Debian's libcrypt1 implements $2b$), as htpasswd -B would write it
    [LibraryImport("libcrypt.so.1", EntryPoint = "crypt", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint Crypt(string key, string setting);

    private static readonly Lock CryptLock = new();

    public static string Bcrypt(string password)
    {
        const string alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        var salt = new string(Enumerable.Range(0, 22).Select(_ => alphabet[Random.Shared.Next(alphabet.Length)]).ToArray());
        // the last salt character carries only 2 significant bits in bcrypt's encoding: pick one that round-trips
        salt = salt[..21] + ".Oeu"[Random.Shared.Next(4)];
        lock (CryptLock)
        {
            var result = Crypt(password, "$2b$05$" + salt);
            var hash = result == 0 ? null : Marshal.PtrToStringUTF8(result);
            if (hash is null || !hash.StartsWith("$2b$05$", StringComparison.Ordinal))
            {
                throw new InvalidOperationException($"libcrypt could not make a bcrypt hash (got '{hash}')");
            }

            return hash;
        }
    }
}
