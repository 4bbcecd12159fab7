using KataAgent.Containerd;
using KataAgent.Containerd.Services;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Containers;

public sealed record OneShotResult(int ExitCode, string Stdout, string Stderr);

/// <summary>Runs a container to completion and collects its output, then removes every trace of it.</summary>
public sealed class OneShotRunner(ContainerdClient client, string scratchRoot, ILogger logger)
{
    public async Task<OneShotResult> RunAsync(ContainerLaunch launch, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var dir = Path.Combine(scratchRoot, "oneshot-" + launch.Id);
        Directory.CreateDirectory(dir);
        var stdout = Path.Combine(dir, "stdout");
        var stderr = Path.Combine(dir, "stderr");
        File.WriteAllBytes(stdout, []);
        File.WriteAllBytes(stderr, []);
        try
        {
            var launcher = new ContainerLauncher(client, logger);
            await launcher.LaunchAsync(launch with { Io = TaskIo.ToFiles(stdout, stderr) }, cancellationToken).ConfigureAwait(false);
            TaskExit exit;
            try
            {
                using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                limit.CancelAfter(timeout);
                try
                {
                    exit = await client.Tasks.WaitAsync(launch.Id, cancellationToken: limit.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new TimeoutException($"container {launch.Id} did not exit within {timeout.TotalSeconds:0} s");
                }
            }
            finally
            {
                // Deleting the task makes the shim finish copying output into the files.
                await TaskReaper.ReapContainerAsync(client, launch.Id, TaskReaper.SigKill, TimeSpan.Zero, logger, CancellationToken.None).ConfigureAwait(false);
            }
            return new OneShotResult(exit.Code,
                await File.ReadAllTextAsync(stdout, cancellationToken).ConfigureAwait(false),
                await File.ReadAllTextAsync(stderr, cancellationToken).ConfigureAwait(false));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
