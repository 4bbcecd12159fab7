using System.Text;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;
using NetMQ;
using NetMQ.Sockets;

namespace KataAgent.Runner.Tests;

[Collection(RunnerCollection.Name)]
public sealed class ProcessModelTests(PublishedRunner runner)
{
    [Fact]
    public async Task GarbageFramesAreIgnoredAndTheRunnerKeepsServing()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();

        using (var intruder = new PushSocket())
        {
            intruder.Options.Linger = TimeSpan.FromSeconds(5);
            intruder.Connect($"tcp://127.0.0.1:{host.InputPort}");
            intruder.SendFrame("just one frame");
            intruder.SendMoreFrame("code").SendMoreFrame("print('three frames')").SendFrame("extra");
            intruder.SendMoreFrame("no-such-op").SendFrame("payload");
            intruder.SendMoreFrame(new byte[] { 0xff, 0xfe, 0x00 }).SendFrame(new byte[] { 1, 2, 3 });
            intruder.SendMoreFrame("start-service").SendFrame("{not json");
            intruder.SendMoreFrame("complete").SendFrame("{not json");
        }
        // The intruder has its own connection: wait until the runner has seen its messages.
        await Eventually.WaitAsync(() => host.Log,
            log => log.Contains("ignored a message with 1 frames", StringComparison.Ordinal)
                && log.Contains("ignored a message with 3 frames", StringComparison.Ordinal)
                && log.Contains("received complete", StringComparison.Ordinal),
            "the runner to log the intruder's 1-frame and 3-frame messages and its complete", cancellationToken: limit);

        ExecutionResult result = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "print('still serving')", limit);
        Assert.Equal("still serving\n", result.Text("stdout"));
        Assert.DoesNotContain("three frames", result.Text("stdout"));
        IReadOnlyDictionary<string, object?> status = await host.Client.GetStatusAsync(limit);
        Assert.Equal("idle", status["status"]);
    }

    [Fact]
    public async Task ClientReconnectsWhenTheRunnerRestarts()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        ExecutionResult before = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "print('before')", limit);
        Assert.Equal("before\n", before.Text("stdout"));

        Assert.Equal(0, await host.StopAsync(TimeSpan.FromSeconds(30)));
        host.StartProcess();
        await host.WaitUntilServingAsync();

        ExecutionResult after = await host.Client.ExecuteToStatusAsync("r2", ExecutionMode.Query, "print('after')", limit);
        Assert.Equal("after\n", after.Text("stdout"));
    }

    [Fact]
    public async Task RunInProgressWhenTheRunnerDiesEndsWithANote()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        var seen = new StringBuilder();
        ExecutionResult? end = null;
        await foreach (ExecutionEvent item in host.Client.ExecuteStreamingAsync("r1", ExecutionMode.Query,
            "import time\nprint('working', flush=True)\ntime.sleep(600)", null, limit))
        {
            if (item is OutputEvent output)
            {
                seen.Append(output.Item.Data);
                if (output.Item.Data.Contains("working", StringComparison.Ordinal))
                {
                    _ = RunnerHost.Kill(host.Pid, 9);
                }
            }
            else if (item is ResultEvent result)
            {
                end = result.Result;
            }
        }
        Assert.NotNull(end);
        Assert.Equal(ExecutionStatus.Finished, end.Status);
        Assert.Null(end.ExitCode);
        Assert.Contains("lost the connection", seen.ToString());
        Assert.Null(host.Client.ActiveRunId);
        // The orphaned interpreter notices that its runner is gone and exits (with its subprocesses).
        await Eventually.WaitAsync(() => RunnerHost.ProcessesInDirectory(host.WorkDir), processes => processes.Count == 0,
            "the orphaned interpreter and its subprocesses to exit", cancellationToken: limit);
    }

    [Fact]
    public async Task OutputWrittenBeforeTheRunnerIsStoppedStillReachesTheClient()
    {
        // Much of 8 MiB of output is still queued in the runner (or in its pipes) when SIGTERM comes right after the
        // print returns: the runner sends all of it before it goes (it used to drop the rest at SIGTERM), and the
        // client reads it before it notes the end. 8 MiB: the runner stopped with about half of it still unsent.
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        var seen = new StringBuilder();
        string code = $"import os, signal, sys, time\nsys.stdout.write('x' * (8 << 20) + '\\nLAST-WORDS\\n')\nsys.stdout.flush()\n"
            + $"os.kill({host.Pid}, signal.SIGTERM)\ntime.sleep(600)";
        await foreach (ExecutionEvent item in host.Client.ExecuteStreamingAsync("r1", ExecutionMode.Query, code, null, limit))
        {
            if (item is OutputEvent output)
            {
                seen.Append(output.Item.Data);
            }
        }
        int exitCode = await host.StopAsync(TimeSpan.FromSeconds(30));
        string text = seen.ToString();
        Assert.True(text.Contains("LAST-WORDS", StringComparison.Ordinal),
            $"the last line never arrived (runner exit code {exitCode}); {text.Length} characters did, ending in: {text[Math.Max(0, text.Length - 200)..]}\nthe runner's log:\n{host.Log}");
        // The run was cut short by the stop: it ends with the client's note of the lost runner, not with a finish of its own.
        Assert.EndsWith("the run was aborted]\n", text, StringComparison.Ordinal);
        Assert.DoesNotContain("its state is lost", text, StringComparison.Ordinal);
        Assert.Equal(0, exitCode);
    }

    [Fact]
    public async Task SigtermStopsTheRunnerAndEveryProcessItStarted()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        var options = new ExecutionOptions { Exec = "echo started; sleep 600", FlushTimeout = TimeSpan.FromMilliseconds(200) };
        await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Batch, "", limit, options);
        await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);
        string stdout = "";
        while (!stdout.Contains("started", StringComparison.Ordinal))
        {
            stdout += (await host.Client.ExecuteAsync("b1", ExecutionMode.Continue, "", options, limit)).Text("stdout");
        }
        List<int> children = RunnerHost.Descendants(host.Pid);
        Assert.NotEmpty(children);

        int exitCode = await host.StopAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(0, exitCode);
        foreach (int child in children)
        {
            Assert.False(RunnerHost.TryReadStat(child, out char state, out _) && state != 'Z', $"process {child} survived the runner");
        }
    }

    [Fact]
    public async Task OrphanedGrandchildrenAreReaped()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        // The shell exits at once; its background child is re-parented to the runner (a subreaper) and exits later.
        var options = new ExecutionOptions { Exec = "sleep 0.3 & echo spawned" };
        await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Batch, "", limit, options);
        await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);
        ExecutionResult exec = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);
        Assert.Equal(0, exec.ExitCode);

        // Wait until no child of the runner is a zombie other than ones that are about to be reaped.
        await Eventually.WaitAsync(() =>
            {
                var zombies = RunnerHost.Descendants(host.Pid)
                    .Where(pid => RunnerHost.TryReadStat(pid, out char state, out _) && state == 'Z')
                    .ToList();
                bool sleeperAlive = RunnerHost.Descendants(host.Pid)
                    .Any(pid => File.Exists($"/proc/{pid}/cmdline") && File.ReadAllText($"/proc/{pid}/cmdline").StartsWith("sleep", StringComparison.Ordinal));
                return (Zombies: string.Join(",", zombies), SleeperAlive: sleeperAlive);
            },
            seen => seen.Zombies.Length == 0 && !seen.SleeperAlive,
            "no zombie children of the runner and no sleep left", cancellationToken: limit);
    }

    [Fact]
    public async Task ConfigWithBadJsonMakesTheRunnerSayWhyItCannotRun()
    {
        string root = Directory.CreateTempSubdirectory("kata-runner-badconfig-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(root, "runner.json"), "{ this is not json");
            var start = new System.Diagnostics.ProcessStartInfo(runner.BinaryPath, ["--config-dir", root]) { RedirectStandardError = true };
            using var process = System.Diagnostics.Process.Start(start)!;
            string errors = await process.StandardError.ReadToEndAsync(RunnerTestHelpers.Limit());
            await process.WaitForExitAsync(RunnerTestHelpers.Limit());

            Assert.Equal(2, process.ExitCode);
            Assert.Contains("cannot run", errors);
            Assert.Contains("runner.json", errors);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task BootstrapScriptRunsBeforeTheFirstRun()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
            File.WriteAllText(Path.Combine(prepared.WorkDir, "bootstrap.sh"), "echo bootstrapped > bootstrap-done.txt\n"));

        ExecutionResult result = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query,
            "print(open('bootstrap-done.txt').read().strip())", RunnerTestHelpers.Limit());

        Assert.Equal("bootstrapped\n", result.Text("stdout"));
    }
}
