using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Runner.Tests;

[Collection(RunnerCollection.Name)]
public sealed class QueryModeTests(PublishedRunner runner)
{
    [Fact]
    public async Task StateSurvivesBetweenRuns()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();

        ExecutionResult first = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "x = 1", limit);
        ExecutionResult second = await host.Client.ExecuteToStatusAsync("r2", ExecutionMode.Query, "print(x + 1)", limit);

        Assert.Equal(ExecutionStatus.Finished, first.Status);
        Assert.Equal(0, first.ExitCode);
        Assert.Equal(ExecutionStatus.Finished, second.Status);
        Assert.Equal(0, second.ExitCode);
        Assert.Equal("2\n", second.Text("stdout"));
    }

    [Fact]
    public async Task ExceptionPrintsTracebackToStderrAndFailsTheRun()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);

        ExecutionResult result = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "1/0", RunnerTestHelpers.Limit());

        Assert.Equal(ExecutionStatus.Finished, result.Status);
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("Traceback", result.Text("stderr"));
        Assert.Contains("ZeroDivisionError", result.Text("stderr"));
        Assert.DoesNotContain("kata_runner_driver", result.Text("stderr"));
        Assert.Equal("", result.Text("stdout"));
    }

    [Fact]
    public async Task InputRoundTrip()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();

        ExecutionResult asking = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query,
            "name = input('Name? ')\nprint('hello', name)", limit);
        Assert.Equal(ExecutionStatus.WaitingInput, asking.Status);
        Assert.Equal("Name? ", asking.Text("stdout"));
        Assert.False(asking.Options!.Value.GetProperty("is_password").GetBoolean());

        // One run at a time: a new run waits (queued) while this one waits for input, and runs after it.
        Task<ExecutionResult> queued = host.Client.ExecuteToStatusAsync("r2", ExecutionMode.Query, "print('after', name)", limit);
        await Eventually.WaitAsync(() => host.Client.QueuedRunIds.Count == 1, "r2 to be queued", cancellationToken: limit);

        ExecutionResult answered = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Input, "kata ü", limit);
        Assert.Equal(ExecutionStatus.Finished, answered.Status);
        Assert.Equal(0, answered.ExitCode);
        Assert.Equal("hello kata ü\n", answered.Text("stdout"));
        Assert.Equal("after kata ü\n", (await queued).Text("stdout"));
    }

    [Fact]
    public async Task InterruptStopsTheCodeAndKeepsTheInterpreterState()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "x = 41", limit);

        ExecutionResult? interrupted = null;
        await foreach (ExecutionEvent item in host.Client.ExecuteStreamingAsync("r2", ExecutionMode.Query,
            "print('spinning', flush=True)\nwhile True:\n    pass", null, limit))
        {
            if (item is OutputEvent { Item.Data: var data } && data.Contains("spinning", StringComparison.Ordinal))
            {
                // status answers promptly while code runs
                IReadOnlyDictionary<string, object?> status = await host.Client.GetStatusAsync(limit);
                Assert.Equal("busy", status["status"]);
                await host.Client.InterruptAsync(limit);
            }
            if (item is ResultEvent result)
            {
                interrupted = result.Result;
            }
        }
        Assert.NotNull(interrupted);
        Assert.Equal(ExecutionStatus.Finished, interrupted.Status);
        Assert.NotEqual(0, interrupted.ExitCode);

        ExecutionResult after = await host.Client.ExecuteToStatusAsync("r3", ExecutionMode.Query, "print(x + 1)", limit);
        Assert.Equal("42\n", after.Text("stdout"));
    }

    [Fact]
    public async Task InterruptedRunReportsKeyboardInterruptOnStderr()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        var console = new List<ConsoleItem>();
        ExecutionResult? end = null;
        await foreach (ExecutionEvent item in host.Client.ExecuteStreamingAsync("r1", ExecutionMode.Query,
            "import time\nprint('sleeping', flush=True)\ntime.sleep(600)", null, limit))
        {
            if (item is OutputEvent output)
            {
                console.Add(output.Item);
                if (output.Item.Data.Contains("sleeping", StringComparison.Ordinal))
                {
                    await host.Client.InterruptAsync(limit);
                }
            }
            else if (item is ResultEvent result)
            {
                end = result.Result;
            }
        }
        Assert.NotNull(end);
        Assert.Contains(console, item => item.Kind == "stderr" && item.Data.Contains("KeyboardInterrupt", StringComparison.Ordinal));
    }

    [Fact]
    public async Task FourMebibytesOfOutputArriveCompleteAndInOrder()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        const int lines = 65536; // 64 bytes each: 4 MiB
        string code = $"import sys\nfor i in range({lines}):\n    sys.stdout.write('%07d' % i + 'x' * 56 + '\\n')";

        ExecutionResult result = await host.Client.ExecuteToStatusAsync("big", ExecutionMode.Query, code, RunnerTestHelpers.Limit(300));

        Assert.Equal(ExecutionStatus.Finished, result.Status);
        Assert.Equal(0, result.ExitCode);
        string stdout = result.Text("stdout");
        Assert.Equal(4 * 1024 * 1024, stdout.Length);
        string[] received = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(lines, received.Length);
        for (int i = 0; i < lines; i++)
        {
            Assert.Equal(i.ToString("D7", System.Globalization.CultureInfo.InvariantCulture) + new string('x', 56), received[i]);
        }
    }

    [Fact]
    public async Task RawFileDescriptorOutputIsStreamedBeforeFinished()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        // A subprocess writes to fd 1 directly, outside Python's sys.stdout.
        ExecutionResult result = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query,
            "import os, subprocess\nsubprocess.run(['echo', os.environ['KATA_TEST_MARKER']])\n_ = os.write(2, b'raw-err\\n')",
            RunnerTestHelpers.Limit());

        Assert.Equal(0, result.ExitCode);
        Assert.Equal("from-environ\n", result.Text("stdout"));
        Assert.Equal("raw-err\n", result.Text("stderr"));
    }

    [Fact]
    public async Task TrailingExpressionIsDisplayedAndExitSetsTheExitCode()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();

        ExecutionResult shown = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "y = 20\ny + 22", limit);
        ExecutionResult exited = await host.Client.ExecuteToStatusAsync("r2", ExecutionMode.Query, "import sys\nsys.exit(7)", limit);
        ExecutionResult stillAlive = await host.Client.ExecuteToStatusAsync("r3", ExecutionMode.Query, "print(y)", limit);

        Assert.Equal("42\n", shown.Text("stdout"));
        Assert.Equal(7, exited.ExitCode);
        Assert.Equal("20\n", stillAlive.Text("stdout"));
    }

    [Fact]
    public async Task InterpreterDeathFinishesTheRunAndTheNextRunStartsAFreshOne()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();

        ExecutionResult died = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "import os\nos._exit(5)", limit);
        ExecutionResult fresh = await host.Client.ExecuteToStatusAsync("r2", ExecutionMode.Query, "print('alive')", limit);

        Assert.Equal(ExecutionStatus.Finished, died.Status);
        Assert.Equal(5, died.ExitCode);
        Assert.Contains("state is lost", died.Text("stderr"));
        Assert.Equal("alive\n", fresh.Text("stdout"));
    }

    [Fact]
    public async Task CompletionUsesTheInterpreterNamespace()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "import os\nkata_variable = 3", limit);

        IReadOnlyList<string> attributes = await host.Client.CompleteAsync(new CompletionRequest { Code = "os.pa", Line = "os.pa" }, limit);
        IReadOnlyList<string> globals = await host.Client.CompleteAsync(new CompletionRequest { Code = "kata_v" }, limit);

        Assert.Contains("os.path", attributes);
        Assert.Contains("kata_variable", globals);
    }
}
