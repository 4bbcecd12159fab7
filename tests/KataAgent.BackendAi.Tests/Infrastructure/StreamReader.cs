using System.Diagnostics;
using System.Text;
using KataAgent.Testing;
using StackExchange.Redis;

namespace KataAgent.BackendAi.Tests.Infrastructure;

/// <summary>One entry of the manager's event stream, as the manager's consumer sees it.</summary>
public sealed record StreamEvent(string Id, string Name, string Source, byte[] Args);

/// <summary>Reads Backend.AI's event stream (db 4, key events) the way the manager's consumer does: XRANGE, raw fields.</summary>
public sealed class EventStreamReader : IAsyncDisposable
{
    private readonly ConnectionMultiplexer _redis;

    private EventStreamReader(ConnectionMultiplexer redis) => _redis = redis;

    public static async Task<EventStreamReader> ConnectAsync(RedisServer server)
    {
        var options = new ConfigurationOptions { EndPoints = { { "127.0.0.1", server.Port } }, Password = server.Password, AbortOnConnectFail = false };
        return new EventStreamReader(await ConnectionMultiplexer.ConnectAsync(options));
    }

    public async Task<IReadOnlyList<StreamEvent>> ReadAllAsync(int db = 4, string key = "events")
    {
        try
        {
            var entries = await _redis.GetDatabase(db).StreamRangeAsync(key);
            return entries.Select(e => new StreamEvent(
                e.Id.ToString(),
                (string)e["name"]!,
                (string)e["source"]!,
                (byte[])e["args"]!)).ToList();
        }
        catch (RedisConnectionException)
        {
            return [];
        }
    }

    /// <summary>Waits until the stream holds an event matching <paramref name="match"/>; returns the first such.</summary>
    public async Task<StreamEvent> WaitForAsync(Func<StreamEvent, bool> match, string what, TimeSpan? timeout = null)
    {
        var all = await Eventually.WaitAsync(() => ReadAllAsync(), events => events.Any(match),
            what, timeout ?? TimeSpan.FromSeconds(60));
        return all.First(match);
    }

    public async ValueTask DisposeAsync() => await _redis.DisposeAsync();
}

/// <summary>Debian's python3 with the Backend.AI stand-in modules (assets/bai) on its path.</summary>
public static class BackendAiPython
{
    public const string Interpreter = "/usr/bin/python3";

    /// <summary>Runs <paramref name="script"/> with the bytes base64'd on stdin; returns stdout, throws with stderr on failure.</summary>
    public static async Task<string> RunAsync(string script, byte[] input)
    {
        Skip.IfNot(File.Exists(Interpreter), $"needs {Interpreter} with python3-msgpack");
        var start = new ProcessStartInfo(Interpreter, ["-c", script])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.Environment["PYTHONPATH"] = Path.Combine(AppContext.BaseDirectory, "assets", "bai");
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.StandardInput.WriteAsync(Convert.ToBase64String(input));
        process.StandardInput.Close();
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(limit.Token);
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"python failed ({process.ExitCode}): {await stderr}\n{await stdout}");
        return (await stdout).Trim();
    }

    public static string Utf8(byte[] bytes) => Encoding.UTF8.GetString(bytes);
}
