using System.Buffers;
using System.Text;
using KataAgent.Runner.Processes;

namespace KataAgent.Runner.Services;

/// <summary>A short command whose output the runner needs (prestart run_command, host-key generation, module checks).</summary>
internal static class HelperCommand
{
    private const int MaxCapturedBytes = 4 * 1024 * 1024;

    public sealed record Outcome(int ExitCode, string Stdout, string Stderr);

    /// <summary>Runs argv to its end; stopped (SIGTERM, then SIGKILL) if <paramref name="timeout"/> or <paramref name="cancellation"/> ends first.</summary>
    /// <exception cref="IOException">the program cannot be started.</exception>
    /// <exception cref="TimeoutException">it did not end within <paramref name="timeout"/>.</exception>
    public static async Task<Outcome> RunAsync(IReadOnlyList<string> argv, IReadOnlyDictionary<string, string> environment,
        string? workingDirectory, TimeSpan? timeout, CancellationToken cancellation)
    {
        ChildProcess process = ProcessSpawner.Start(new ProcessStartSpec
        {
            Executable = argv[0],
            Arguments = argv,
            Environment = environment,
            WorkingDirectory = workingDirectory is not null && Directory.Exists(workingDirectory) ? workingDirectory : null,
        });
        var captured = new[] { new ArrayBufferWriter<byte>(), new ArrayBufferWriter<byte>() };
        var pump = new PipePump($"helper-{process.Pid}", [process.StdoutFd, process.StderrFd], (index, data) =>
        {
            lock (captured)
            {
                if (captured[index].WrittenCount + data.Length <= MaxCapturedBytes)
                {
                    captured[index].Write(data);
                }
            }
        }, process.Exited);
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        if (timeout is { } duration)
        {
            limit.CancelAfter(duration);
        }
        int exitCode;
        try
        {
            exitCode = await process.Exited.WaitAsync(limit.Token);
        }
        catch (OperationCanceledException) when (!cancellation.IsCancellationRequested)
        {
            await process.TerminateAsync(TimeSpan.FromSeconds(3));
            throw new TimeoutException($"{argv[0]} did not finish within {timeout!.Value.TotalSeconds:0} s");
        }
        catch (OperationCanceledException)
        {
            await process.TerminateAsync(TimeSpan.FromSeconds(3));
            throw;
        }
        await Task.WhenAny(pump.Finished, Task.Delay(TimeSpan.FromSeconds(5), CancellationToken.None));
        lock (captured)
        {
            return new Outcome(exitCode, Encoding.UTF8.GetString(captured[0].WrittenSpan), Encoding.UTF8.GetString(captured[1].WrittenSpan));
        }
    }

    /// <summary>
    /// The first executable file called <paramref name="name"/> in PATH (of <paramref name="environment"/>),
    /// then in <paramref name="extraDirectories"/>; null if there is none.
    /// </summary>
    public static string? FindExecutable(string name, IReadOnlyDictionary<string, string> environment, params string[] extraDirectories)
    {
        string path = environment.TryGetValue("PATH", out string? value) ? value : "/usr/local/bin:/usr/bin:/bin";
        foreach (string directory in path.Split(':', StringSplitOptions.RemoveEmptyEntries).Concat(extraDirectories))
        {
            string candidate = Path.Combine(directory, name);
            try
            {
                if (File.Exists(candidate) && (File.GetUnixFileMode(candidate) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0)
                {
                    return candidate;
                }
            }
            catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
            {
            }
        }
        return null;
    }
}
