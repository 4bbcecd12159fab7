using System.Diagnostics;
using KataAgent.Containerd.Private;
using KataAgent.Containerd.Runtime;
using KataAgent.Core.Containers;
using KataAgent.Images;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Bench;

/// <summary>
/// `sh -c 'echo hi'` in the base image: our client (create container + task, wait, reap) against
/// `ctr run --rm` of the same image on the same private containerd.
/// </summary>
internal static class EchoBench
{
    public static async Task RunAsync(int runs)
    {
        var root = Path.Combine("/tmp", "kab-" + Guid.NewGuid().ToString("N")[..8]);
        await using var containerd = await PrivateContainerd.StartAsync(new PrivateContainerdOptions(root));
        const string ns = "kata-agent-bench";
        using var client = containerd.CreateClient(ns);
        await client.Namespaces.EnsureAsync(ns);
        try
        {
            var built = await new BaseImageBuilder().BuildPythonAsync();
            var image = (await new ImageImporter(client).ImportAsync(built.ArchivePath)).Single();
            var resolved = new ResolvedImage(image.Name, image.Config, image.ChainId);
            var wrapper = await GvisorWrapper.EnsureAsync(Path.Combine(root, "bin"));
            var runner = new OneShotRunner(client, root, NullLogger.Instance);

            Console.WriteLine($"echo: {runs} runs each; containerd {(await client.Version.GetAsync()).Version}; {Environment.ProcessorCount} cores");
            Console.WriteLine("| what | runs | p50 ms | p99 ms | p50 / ctr |");
            Console.WriteLine("|---|---|---|---|---|");
            foreach (var (name, runtime, ctrArgs) in new[]
            {
                ("runc", RuntimeClass.Runc(), new[] { "--runtime", "io.containerd.runc.v2" }),
                ("gvisor", RuntimeClass.Gvisor(wrapper), new[] { "--runtime", "io.containerd.runc.v2", "--runc-binary", wrapper }),
            })
            {
                var ctr = new List<double>();
                var ours = new List<double>();
                for (var i = 0; i < runs + 1; i++)
                {
                    var id = $"b-{name}-{i}-{Guid.NewGuid():N}"[..20];
                    var sw = Stopwatch.StartNew();
                    var result = await runner.RunAsync(new ContainerLaunch(id, resolved, runtime) { Args = ["/bin/sh", "-c", "echo hi"] }, TimeSpan.FromMinutes(2));
                    var oursMs = sw.Elapsed.TotalMilliseconds;
                    if (result.Stdout.Trim() != "hi")
                        throw new InvalidOperationException($"unexpected output: {result.Stdout} / {result.Stderr}");

                    sw.Restart();
                    await Ctr(containerd.SocketPath, ns, ["run", "--rm", .. ctrArgs, image.Name, id + "c", "/bin/sh", "-c", "echo hi"]);
                    var ctrMs = sw.Elapsed.TotalMilliseconds;
                    if (i == 0)
                        continue; // warm-up
                    ours.Add(oursMs);
                    ctr.Add(ctrMs);
                }
                Console.WriteLine(Stats.Row($"{name}: kata-agent client", ours, ctr));
                Console.WriteLine(Stats.Row($"{name}: ctr run --rm", ctr));
            }
        }
        finally
        {
            await containerd.StopAsync(TimeSpan.FromSeconds(10));
            Directory.Delete(root, recursive: true);
        }
    }

    private static async Task Ctr(string socket, string ns, string[] args)
    {
        var psi = new ProcessStartInfo("ctr") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-a", socket, "-n", ns }.Concat(args))
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0 || (await stdout).Trim() != "hi")
            throw new InvalidOperationException($"ctr {string.Join(' ', args)} failed ({process.ExitCode}): {await stderr}");
    }
}
