using System.Diagnostics;
using System.Security.Cryptography;
using KataAgent.Core;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;

namespace KataAgent.Testing;

public sealed record SoakReport(int Cycles, int Failures, TimeSpan Elapsed, IReadOnlyList<string> Errors, AgentLeakCensus Census);

/// <summary>Create, execute, upload, download, destroy — N times — then count what was left behind.</summary>
public static class Soak
{
    public static async Task<SoakReport> RunAsync(Agent agent, string image, IReadOnlyList<string> runtimeClasses, int cycles,
        IProgress<int>? progress = null, CancellationToken cancellationToken = default)
    {
        var errors = new List<string>();
        var stopwatch = Stopwatch.StartNew();
        var payload = RandomNumberGenerator.GetBytes(256 * 1024);
        for (var i = 0; i < cycles; i++)
        {
            var runtime = runtimeClasses[i % runtimeClasses.Count];
            string? kernelId = null;
            try
            {
                var session = await agent.CreateSessionAsync(new SessionRequest { Image = image, RuntimeClass = runtime, Cpus = 0.5, MemoryBytes = 256L << 20 },
                    cancellationToken: cancellationToken).ConfigureAwait(false);
                kernelId = session.KernelId;
                var output = "";
                await foreach (var e in agent.ExecuteAsync(kernelId, $"soak-{i}", ExecutionMode.Query, $"print({i} * 2)", cancellationToken: cancellationToken).ConfigureAwait(false))
                {
                    if (e is OutputEvent { Item.Kind: "stdout" } o)
                        output += o.Item.Data;
                }
                if (output.Trim() != (i * 2).ToString(System.Globalization.CultureInfo.InvariantCulture))
                    throw new InvalidOperationException($"cycle {i}: unexpected output '{output.Trim()}'");
                var files = agent.Files(kernelId);
                await files.UploadAsync("soak.bin", new MemoryStream(payload), payload.Length, createParents: false, cancellationToken).ConfigureAwait(false);
                await using (var download = await files.OpenDownloadAsync("soak.bin", cancellationToken).ConfigureAwait(false))
                {
                    using var copy = new MemoryStream();
                    await download.CopyToAsync(copy, cancellationToken).ConfigureAwait(false);
                    if (!copy.ToArray().AsSpan().SequenceEqual(payload))
                        throw new InvalidOperationException($"cycle {i}: download differs from upload");
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                errors.Add($"cycle {i} ({runtime}): {e.Message}");
            }
            finally
            {
                if (kernelId is not null)
                {
                    try
                    {
                        await agent.DestroySessionAsync(kernelId, cancellationToken: cancellationToken).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is not OperationCanceledException)
                    {
                        errors.Add($"cycle {i} destroy: {e.Message}");
                    }
                }
            }
            progress?.Report(i + 1);
        }
        var census = await AgentLeakCensus.TakeAsync(agent, cancellationToken).ConfigureAwait(false);
        return new SoakReport(cycles, errors.Count, stopwatch.Elapsed, errors, census);
    }
}
