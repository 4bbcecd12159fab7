using System.Diagnostics;
using KataAgent.Api.Client;
using KataAgent.Testing;

namespace KataAgent.Cli.Tests;

/// <summary>A `kata-agent serve` process of a test environment.</summary>
public static class ServeProcess
{
    /// <summary>Starts a serve and waits until its socket answers.</summary>
    public static async Task<Process> StartAsync(CliEnvironment env, string? socket = null)
    {
        var socketPath = socket ?? env.SocketPath;
        var serve = Process.Start(CliProcess.StartInfo(["--config", env.ConfigPath, "--socket", socketPath, "serve"]))!;
        serve.StandardInput.Close();
        var stderr = serve.StandardError.ReadToEndAsync();
        _ = serve.StandardOutput.ReadToEndAsync();
        try
        {
            await Eventually.WaitAsync(async () => await ApiClient.IsListeningAsync(socketPath) || serve.HasExited,
                $"serve to answer on {socketPath}", TimeSpan.FromSeconds(120));
        }
        catch (TimeoutException)
        {
            serve.Kill(entireProcessTree: true);
            throw;
        }
        if (serve.HasExited)
            throw new InvalidOperationException($"serve exited with {serve.ExitCode}: {await stderr}");
        return serve;
    }

    /// <summary>SIGTERM and wait: the serve's exit code, or -1 when it had to be killed.</summary>
    public static async Task<int> StopAsync(Process serve)
    {
        ProcessTable.Kill(serve.Id, 15);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        try
        {
            await serve.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            serve.Kill(entireProcessTree: true);
            await serve.WaitForExitAsync();
            return -1;
        }
        return serve.ExitCode;
    }
}
