using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace KataAgent.BackendAi.Tests.Rpc;

/// <summary>
/// The manager's side, for real: assets/callosum_client.py (pyzmq DEALER) under /usr/bin/python3 in its JSON-lines
/// mode. Each command is one JSON line in and one out.
/// </summary>
internal sealed class PythonCallosumClient : IAsyncDisposable
{
    public const string Python = "/usr/bin/python3";
    private static readonly TimeSpan AnswerTimeout = TimeSpan.FromMinutes(2);

    private readonly Process _process;
    private readonly List<string> _stderr = [];

    private PythonCallosumClient(Process process)
    {
        _process = process;
    }

    public static string ScriptPath => Path.Combine(AppContext.BaseDirectory, "assets", "callosum_client.py");

    public static async Task<PythonCallosumClient> StartAsync(string endpoint, params string[] extraArguments)
    {
        var start = new ProcessStartInfo(Python)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(ScriptPath);
        start.ArgumentList.Add("--endpoint");
        start.ArgumentList.Add(endpoint);
        start.ArgumentList.Add("--jsonl");
        foreach (string argument in extraArguments)
        {
            start.ArgumentList.Add(argument);
        }
        start.Environment["PYTHONPATH"] = Path.Combine(AppContext.BaseDirectory, "assets", "bai");
        var process = Process.Start(start) ?? throw new InvalidOperationException("python3 did not start");
        var client = new PythonCallosumClient(process);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (client._stderr)
                {
                    client._stderr.Add(e.Data);
                }
            }
        };
        process.BeginErrorReadLine();
        JsonObject ready = await client.ReadAnswerAsync("the client's ready line");
        Assert.True(ready["ready"]!.GetValue<bool>(), ready.ToJsonString());
        client.Serializer = ready["serializer"]!.GetValue<string>();
        return client;
    }

    /// <summary>"plain" (msgpack) or "bai" (Backend.AI's ai.backend.common.msgpack from assets/bai).</summary>
    public string Serializer { get; private set; } = "";

    public async Task<JsonObject> SendAsync(object command)
    {
        string line = JsonSerializer.Serialize(command);
        await _process.StandardInput.WriteLineAsync(line);
        await _process.StandardInput.FlushAsync();
        JsonObject answer = await ReadAnswerAsync(line.Length > 200 ? line[..200] + "..." : line);
        if (answer["exception"] is JsonNode exception)
            throw new InvalidOperationException($"the Python client failed on {line[..Math.Min(200, line.Length)]}: {exception} {answer["message"]}");
        return answer;
    }

    private async Task<JsonObject> ReadAnswerAsync(string forWhat)
    {
        using var timeout = new CancellationTokenSource(AnswerTimeout);
        string? line;
        try
        {
            line = await _process.StandardOutput.ReadLineAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"no answer from the Python client within {AnswerTimeout} for {forWhat}; stderr: {Stderr}");
        }
        if (line is null)
            throw new InvalidOperationException($"the Python client exited (answering {forWhat}); stderr: {Stderr}");
        return JsonNode.Parse(line)!.AsObject();
    }

    public string Stderr
    {
        get
        {
            lock (_stderr)
            {
                return string.Join("\n", _stderr);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                await _process.StandardInput.WriteLineAsync("""{"op": "close"}""");
                await _process.StandardInput.FlushAsync();
                _process.StandardInput.Close();
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                await _process.WaitForExitAsync(timeout.Token);
            }
        }
        catch (Exception exception) when (exception is IOException or OperationCanceledException or InvalidOperationException)
        {
            // Falls through to the kill.
        }
        finally
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }
            _process.Dispose();
        }
    }
}
