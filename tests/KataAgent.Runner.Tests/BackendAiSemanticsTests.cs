using System.Globalization;
using System.Text.Json.Nodes;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Runner.Tests;

/// <summary>The runner's execution semantics, environment, files and status as Backend.AI 25.15's runner has them.</summary>
[Collection(RunnerCollection.Name)]
public sealed class BackendAiSemanticsTests(PublishedRunner runner)
{
    private static readonly ExecutionOptions ExecStar = new() { Clean = "*", Build = "*", Exec = "*" };

    [Fact]
    public async Task ExecStarRunsMainPyWithTheRuntimeInBatchModeAndInputGoesThroughTheSocket()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
            File.WriteAllText(Path.Combine(prepared.WorkDir, "main.py"), """
                import os, sys
                print("interpreter", sys.executable)
                print("batch mode", os.environ.get("_BACKEND_BATCH_MODE"))
                name = input("name? ")
                print("hello", name)
                second = input()
                print("and", second)
                """));
        CancellationToken limit = RunnerTestHelpers.Limit();

        (ExecutionResult clean, ExecutionResult build) = await RunCleanAndBuildAsync(host, ExecStar, limit);
        ExecutionResult asked = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);
        ExecutionResult askedAgain = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Input, "kata", limit);
        ExecutionResult end = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Input, "more", limit);

        Assert.Equal((ExecutionStatus.CleanFinished, 0), (clean.Status, clean.ExitCode));
        Assert.Equal((ExecutionStatus.BuildFinished, 0), (build.Status, build.ExitCode));
        Assert.True(asked.Status == ExecutionStatus.WaitingInput, asked.Describe());
        // Batch mode's waiting-input has an empty payload (query mode's carries is_password).
        Assert.True(asked.Options is null || !asked.Options.Value.EnumerateObject().Any(), $"options: {asked.Options}");
        Assert.True(askedAgain.Status == ExecutionStatus.WaitingInput, askedAgain.Describe());
        Assert.True(end.Status == ExecutionStatus.Finished && end.ExitCode == 0, end.Describe());
        string stdout = asked.Text("stdout") + askedAgain.Text("stdout") + end.Text("stdout");
        Assert.Contains($"interpreter {PublishedRunner.PythonPath}\n", stdout);
        Assert.Contains("batch mode 1\n", stdout);
        Assert.Contains("name? ", stdout);
        Assert.Contains("hello kata\n", stdout);
        Assert.Contains("and more\n", stdout);

        // The output is also kept in the task log (no BACKENDAI_KERNEL_ID here: .logs/task/task.log).
        string log = await File.ReadAllTextAsync(Path.Combine(host.WorkDir, ".logs", "task", "task.log"), limit);
        Assert.Contains("hello kata\n", log);
    }

    [Fact]
    public async Task StarHeuristicsUseMakeThenSetupPyWithTheRuntimeAndExecWithoutMainPyIs127()
    {
        // A stand-in runtime that says how it was called: pip is never really run (no network in tests).
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
        {
            string fakeRuntime = Path.Combine(prepared.Root, "fake-python");
            File.WriteAllText(fakeRuntime, "#!/bin/sh\necho \"runtime $*\"\n");
            File.SetUnixFileMode(fakeRuntime, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            EditRunnerJson(prepared, settings => settings["runtimePath"] = fakeRuntime);
            File.WriteAllText(Path.Combine(prepared.WorkDir, "setup.py"), "raise SystemExit('not to be run')\n");
            File.WriteAllText(Path.Combine(prepared.WorkDir, "main.py"), "");
        });
        CancellationToken limit = RunnerTestHelpers.Limit();

        (ExecutionResult clean, ExecutionResult build) = await RunCleanAndBuildAsync(host, ExecStar, limit);
        ExecutionResult exec = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);

        Assert.Equal("", clean.Text("stdout") + clean.Text("stderr"));
        Assert.Equal("runtime -m pip install --user -e .\n", build.Text("stdout"));
        Assert.True(exec.ExitCode == 0, exec.Describe());
        Assert.Equal("runtime main.py\n", exec.Text("stdout"));

        // With a Makefile, build * is make; without main.py, exec * ends with 127.
        File.WriteAllText(Path.Combine(host.WorkDir, "Makefile"), "all:\n\t@echo made by make\n");
        File.Delete(Path.Combine(host.WorkDir, "main.py"));
        (_, ExecutionResult makeBuild) = await RunCleanAndBuildAsync(host, ExecStar, limit, "b2");
        ExecutionResult missing = await host.Client.ExecuteToStatusAsync("b2", ExecutionMode.Continue, "", limit);
        if (File.Exists("/usr/bin/make"))
        {
            Assert.True(makeBuild.ExitCode == 0 && makeBuild.Text("stdout") == "made by make\n", makeBuild.Describe());
        }
        else
        {
            Assert.DoesNotContain("runtime", makeBuild.Text("stdout"));
        }
        Assert.Equal((ExecutionStatus.Finished, 127), (missing.Status, missing.ExitCode));
        Assert.Contains("main.py", missing.Text("stderr"));
    }

    [Fact]
    public async Task RunsKilledByASignalEndWithMinusTheSignalNumber()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();

        (_, _) = await RunCleanAndBuildAsync(host, new ExecutionOptions { Exec = "echo before; kill -9 $$" }, limit);
        ExecutionResult batch = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);
        ExecutionResult query = await host.Client.ExecuteToStatusAsync("q1", ExecutionMode.Query,
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", limit);

        Assert.True(batch.Status == ExecutionStatus.Finished && batch.ExitCode == -9, batch.Describe());
        Assert.Equal("before\n", batch.Text("stdout"));
        Assert.True(query.Status == ExecutionStatus.Finished && query.ExitCode == -9, query.Describe());
    }

    [Fact]
    public async Task ChildrenGetBackendAiEnvironment()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
            File.WriteAllText(Path.Combine(prepared.ConfigDir, "environ.txt"),
                "# written by the agent\n\nKATA_TEST_MARKER=from-environ\nSHELL=/bin/shell-from-environ\nPATH=/usr/bin:/bin\n"));
        CancellationToken limit = RunnerTestHelpers.Limit();
        const string show = "import os, site\n"
            + "for key in ('LANG', 'HOME', 'TERM', 'SHELL', 'KATA_TEST_MARKER', 'PATH', 'PYTHONPATH', '_BACKEND_BATCH_MODE'):\n"
            + "    print(key + '=' + os.environ.get(key, '<unset>'))\n"
            + "print('USER_SITE=' + site.USER_SITE)\n";
        File.WriteAllText(Path.Combine(host.WorkDir, "show.py"), show);

        ExecutionResult query = await host.Client.ExecuteToStatusAsync("q1", ExecutionMode.Query, show, limit);
        (_, _) = await RunCleanAndBuildAsync(host, new ExecutionOptions { Exec = $"{PublishedRunner.PythonPath} show.py" }, limit);
        ExecutionResult batch = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);

        foreach ((string mode, ExecutionResult result) in new[] { ("query", query), ("batch", batch) })
        {
            Dictionary<string, string> seen = ParseLines(result.Text("stdout"));
            string because = $"{mode}: {result.Describe()}";
            Assert.True(seen.GetValueOrDefault("LANG") == "C.UTF-8", because);
            Assert.True(seen.GetValueOrDefault("HOME") == host.WorkDir, because);
            Assert.True(seen.GetValueOrDefault("TERM") == "xterm", because);
            Assert.True(seen.GetValueOrDefault("SHELL") == "/bin/shell-from-environ", because); // environ.txt overrides defaults
            Assert.True(seen.GetValueOrDefault("KATA_TEST_MARKER") == "from-environ", because);
            // ~/.local/bin goes first even when environ.txt sets PATH.
            Assert.True(seen.GetValueOrDefault("PATH")?.Split(':')[0] == Path.Combine(host.WorkDir, ".local", "bin"), because);
            string userSite = seen.GetValueOrDefault("USER_SITE") ?? "";
            Assert.True(userSite.StartsWith(host.WorkDir + "/.local/lib/python", StringComparison.Ordinal), because);
            string[] pythonPath = (seen.GetValueOrDefault("PYTHONPATH") ?? "").Split(':');
            if (mode == "query")
            {
                Assert.True(pythonPath[0] == userSite, because);
                Assert.True(seen.GetValueOrDefault("_BACKEND_BATCH_MODE") == "<unset>", because);
            }
            else
            {
                // Batch mode: our sitecustomize dir first (for input()), then the user site.
                Assert.True(pythonPath.Length >= 2 && pythonPath[0].EndsWith("/batch-site", StringComparison.Ordinal) && pythonPath[1] == userSite, because);
                Assert.True(seen.GetValueOrDefault("_BACKEND_BATCH_MODE") == "1", because);
            }
        }
    }

    [Fact]
    public async Task TaskLogIsNamedAfterTheKernelIdAndKeepsEveryRun()
    {
        var kernelId = Guid.NewGuid();
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
            File.AppendAllText(Path.Combine(prepared.ConfigDir, "environ.txt"), $"BACKENDAI_KERNEL_ID={kernelId}\n"));
        CancellationToken limit = RunnerTestHelpers.Limit();

        (_, _) = await RunCleanAndBuildAsync(host, new ExecutionOptions { Clean = "echo cleaned", Exec = "echo first-out; echo first-err >&2" }, limit);
        await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);
        (_, _) = await RunCleanAndBuildAsync(host, new ExecutionOptions { Exec = "echo second" }, limit, "b2");
        await host.Client.ExecuteToStatusAsync("b2", ExecutionMode.Continue, "", limit);

        string hex = kernelId.ToString("N");
        string log = await File.ReadAllTextAsync(Path.Combine(host.WorkDir, ".logs", "task", hex[..2], hex[2..4], hex[4..] + ".log"), limit);
        Assert.Contains("cleaned\n", log);
        Assert.Contains("first-out\n", log);
        Assert.Contains("first-err\n", log);
        Assert.Contains("second\n", log);
    }

    [Fact]
    public async Task TaskLogStopsGrowingAtItsLimit()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit(300);
        const long limitBytes = 16L * 1024 * 1024;

        // 20 MiB of output: all of it reaches the agent, only the first 16 MiB the log.
        (_, _) = await RunCleanAndBuildAsync(host, new ExecutionOptions { Exec = "head -c 20971520 /dev/zero | tr '\\0' x; echo; echo after" }, limit);
        ExecutionResult exec = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);
        (_, _) = await RunCleanAndBuildAsync(host, new ExecutionOptions { Exec = "echo next-run" }, limit, "b2");
        await host.Client.ExecuteToStatusAsync("b2", ExecutionMode.Continue, "", limit);

        Assert.True(exec.Status == ExecutionStatus.Finished && exec.ExitCode == 0, $"status={exec.Status} exit={exec.ExitCode}");
        var log = new FileInfo(Path.Combine(host.WorkDir, ".logs", "task", "task.log"));
        Assert.InRange(log.Length, limitBytes, limitBytes + 200);
        string tail = File.ReadAllText(log.FullName)[^150..];
        Assert.Contains("task log size limit reached", tail);
        Assert.DoesNotContain("after", tail);
        Assert.DoesNotContain("next-run", tail);
    }

    [Fact]
    public async Task OurSitecustomizeRunsTheUsersOwnToo()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        ExecutionResult site = await host.Client.ExecuteToStatusAsync("q1", ExecutionMode.Query, "import site; print(site.USER_SITE)", limit);
        string userSite = site.Text("stdout").Trim();
        Directory.CreateDirectory(userSite);
        File.WriteAllText(Path.Combine(userSite, "sitecustomize.py"), "import sys\nsys.stderr.write('user sitecustomize ran\\n')\n");

        (_, _) = await RunCleanAndBuildAsync(host, new ExecutionOptions { Exec = $"{PublishedRunner.PythonPath} -c 'print(input())'" }, limit);
        ExecutionResult asked = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Continue, "", limit);
        ExecutionResult end = await host.Client.ExecuteToStatusAsync("b1", ExecutionMode.Input, "answered", limit);

        Assert.True(asked.Status == ExecutionStatus.WaitingInput, asked.Describe());
        Assert.Equal("user sitecustomize ran\n", asked.Text("stderr"));
        Assert.True(end.ExitCode == 0 && end.Text("stdout") == "answered\n", end.Describe());
    }

    [Fact]
    public async Task IntrinsicPortsJsonSetsTheReplPortsWhenRunnerJsonDoesNot()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
        {
            EditRunnerJson(prepared, settings =>
            {
                settings.Remove("replInPort");
                settings.Remove("replOutPort");
            });
            File.WriteAllText(Path.Combine(prepared.ConfigDir, "intrinsic-ports.json"),
                $"{{\"replin\": {prepared.InputPort}, \"replout\": \"{prepared.OutputPort}\", \"sshd\": 2200}}");
        });

        ExecutionResult result = await host.Client.ExecuteToStatusAsync("q1", ExecutionMode.Query, "print(6 * 7)", RunnerTestHelpers.Limit());

        Assert.Equal("42\n", result.Text("stdout"));
        Assert.Contains($"PULL tcp://127.0.0.1:{host.InputPort}", host.Log);
    }

    [Fact]
    public async Task ExplicitRunnerJsonPortsWinOverIntrinsicPortsJson()
    {
        int otherIn = RunnerHost.FreePort(), otherOut = RunnerHost.FreePort();
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
            File.WriteAllText(Path.Combine(prepared.ConfigDir, "intrinsic-ports.json"), $"{{\"replin\": {otherIn}, \"replout\": {otherOut}}}"));

        ExecutionResult result = await host.Client.ExecuteToStatusAsync("q1", ExecutionMode.Query, "print(6 * 7)", RunnerTestHelpers.Limit());

        Assert.Equal("42\n", result.Text("stdout"));
        Assert.DoesNotContain($":{otherIn}", host.Log);
    }

    [Fact]
    public async Task StatusIsAnsweredOnlyAfterTheBootstrapWithStartedAt()
    {
        // The bootstrap (from the work dir) takes a while; a status asked meanwhile is held until it is done.
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
                File.WriteAllText(Path.Combine(prepared.WorkDir, "bootstrap.sh"),
                    "touch bootstrap-began\nsleep 4\ndate +%s.%N > bootstrap-ended\n"),
            waitUntilServing: false, replyTimeout: TimeSpan.FromSeconds(120));
        CancellationToken limit = RunnerTestHelpers.Limit();
        string began = Path.Combine(host.WorkDir, "bootstrap-began"), ended = Path.Combine(host.WorkDir, "bootstrap-ended");
        await Eventually.WaitAsync(() => File.Exists(began), "the bootstrap script to start", TimeSpan.FromSeconds(60), cancellationToken: limit);
        Assert.False(File.Exists(ended), "the bootstrap ended before the test could ask; the sleep is too short for this machine");

        IReadOnlyDictionary<string, object?> status = await host.Client.GetStatusAsync(limit);

        string endedText = await File.ReadAllTextAsync(ended, limit); // exists: the answer came after the bootstrap
        double bootstrapEnded = double.Parse(endedText.Trim(), CultureInfo.InvariantCulture);
        double startedAt = Convert.ToDouble(status["started_at"], CultureInfo.InvariantCulture);
        Assert.True(startedAt >= bootstrapEnded - 0.01, $"started_at {startedAt} is before the bootstrap ended at {bootstrapEnded}");
        Assert.True(startedAt <= DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0 + 1, $"started_at {startedAt} is in the future");
        Assert.Equal(true, status["started"]);
        Assert.Equal("python", status["runtime-type"]);
    }

    [Fact]
    public async Task OomEventLogsTheProcessTree()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        await host.Client.ExecuteToStatusAsync("q1", ExecutionMode.Query, "x = 1", limit); // the interpreter runs

        await host.Client.SendEventAsync("oom", cancellationToken: limit);

        await Eventually.WaitAsync(() => host.Log, log => log.Contains("kata_runner_driver.py", StringComparison.Ordinal)
            && log.Contains("out-of-memory", StringComparison.Ordinal), "the runner to log its process tree", TimeSpan.FromSeconds(60), cancellationToken: limit);
        string tree = host.Log[host.Log.IndexOf("out-of-memory", StringComparison.Ordinal)..];
        Assert.Contains($"{host.Pid} rss ", tree);
        Assert.Matches(@"\n +\d+ rss \d+ MiB: \S*python3\S* \S*kata_runner_driver\.py", tree);
    }

    private static async Task<(ExecutionResult Clean, ExecutionResult Build)> RunCleanAndBuildAsync(RunnerHost host, ExecutionOptions options,
        CancellationToken limit, string runId = "b1")
    {
        ExecutionResult clean = await host.Client.ExecuteToStatusAsync(runId, ExecutionMode.Batch, "", limit, options);
        ExecutionResult build = await host.Client.ExecuteToStatusAsync(runId, ExecutionMode.Continue, "", limit);
        return (clean, build);
    }

    private static void EditRunnerJson(RunnerHost host, Action<JsonObject> edit)
    {
        string path = Path.Combine(host.ConfigDir, "runner.json");
        JsonObject settings = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(settings);
        File.WriteAllText(path, settings.ToJsonString());
    }

    private static Dictionary<string, string> ParseLines(string text) =>
        text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split('=', 2))
            .Where(parts => parts.Length == 2)
            .GroupBy(parts => parts[0])
            .ToDictionary(group => group.Key, group => group.Last()[1]);
}
