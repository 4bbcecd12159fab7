using KataAgent.Runner.Protocol;

namespace KataAgent.Runner.Tests;

[Collection(RunnerCollection.Name)]
public sealed class BatchModeTests(PublishedRunner runner)
{
    [SkippableFact]
    public async Task BuildsACProgramWithTheMakefileHeuristicAndReportsItsExitCode()
    {
        Skip.If(!File.Exists("/usr/bin/cc") || !File.Exists("/usr/bin/make"), "needs a C compiler at /usr/bin/cc and /usr/bin/make");
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
        {
            File.WriteAllText(Path.Combine(prepared.WorkDir, "main.c"),
                "#include <stdio.h>\nint main(void) { printf(\"hello from C\\n\"); return 3; }\n");
            File.WriteAllText(Path.Combine(prepared.WorkDir, "Makefile"), "main: main.c\n\tcc -o main main.c\n");
        });
        CancellationToken limit = RunnerTestHelpers.Limit();
        var options = new ExecutionOptions { Clean = "", Build = "*", Exec = "./main" };

        ExecutionResult clean = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Batch, "", limit, options);
        ExecutionResult build = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);
        ExecutionResult exec = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);

        Assert.Equal(ExecutionStatus.CleanFinished, clean.Status);
        Assert.Equal(0, clean.ExitCode);
        Assert.Equal(ExecutionStatus.BuildFinished, build.Status);
        Assert.True(build.ExitCode == 0, build.Describe());
        Assert.Equal(ExecutionStatus.Finished, exec.Status);
        Assert.Equal(3, exec.ExitCode);
        Assert.Equal("hello from C\n", exec.Text("stdout"));
        Assert.Null(host.Client.ActiveRunId);
    }

    [Fact]
    public async Task ShellCommandsReportTheirOwnExitCodesAndOutput()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        var options = new ExecutionOptions
        {
            Clean = "echo cleaning",
            Build = "printf '#!/bin/sh\\necho run \"$1\"; echo oops >&2; exit 4\\n' > prog.sh && chmod +x prog.sh",
            Exec = "./prog.sh $KATA_TEST_MARKER",
        };

        ExecutionResult clean = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Batch, "", limit, options);
        ExecutionResult build = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);
        ExecutionResult exec = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);

        Assert.Equal("cleaning\n", clean.Text("stdout"));
        Assert.Equal(0, build.ExitCode);
        Assert.Equal(4, exec.ExitCode);
        Assert.Equal("run from-environ\n", exec.Text("stdout"));
        Assert.Equal("oops\n", exec.Text("stderr"));
    }

    [Fact]
    public async Task ExecIsSkippedWhenTheBuildFails()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        var options = new ExecutionOptions { Build = "exit 2", Exec = "echo should-not-run" };

        await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Batch, "", limit, options);
        ExecutionResult build = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);
        ExecutionResult exec = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);

        Assert.Equal(2, build.ExitCode);
        // Backend.AI's runner: a skipped exec "finishes" with 127 (command not found).
        Assert.Equal(ExecutionStatus.Finished, exec.Status);
        Assert.Equal(127, exec.ExitCode);
        Assert.Equal("", exec.Text("stdout"));
    }

    [Fact]
    public async Task BatchCommandReadsInputAndCanBeInterrupted()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        var options = new ExecutionOptions
        {
            Exec = "echo waiting; read line; echo got $line; echo ready; sleep 600",
            FlushTimeout = TimeSpan.FromMilliseconds(200),
        };

        await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Batch, "", limit, options); // clean
        await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);       // build
        // The command reads stdin only once it runs: wait until it says so.
        string stdout = "";
        while (!stdout.Contains("waiting", StringComparison.Ordinal))
        {
            stdout += (await host.Client.ExecuteAsync("b1", ExecutionMode.Continue, "", options, limit)).Text("stdout");
        }
        ExecutionResult answered = await host.Client.ExecuteAsync("b1", ExecutionMode.Input, "abc", options, limit);
        stdout += answered.Text("stdout");
        while (!stdout.Contains("ready", StringComparison.Ordinal))
        {
            stdout += (await host.Client.ExecuteAsync("b1", ExecutionMode.Continue, "", options, limit)).Text("stdout");
        }
        await host.Client.InterruptAsync(limit);
        ExecutionResult end = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);

        Assert.Contains("got abc", stdout);
        Assert.Equal(ExecutionStatus.Finished, end.Status);
        // Killed by SIGINT: -2, as Backend.AI reports a signal (Python's returncode), not the shell's 130.
        Assert.Equal(-2, end.ExitCode);
    }
}
