using System.Text;
using System.Text.Json;
using KataAgent.Testing;

namespace KataAgent.Runner.Protocol.Tests;

public sealed class KernelRunnerClientTests
{
    private static CancellationToken Limit() => new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token;

    [Fact]
    public async Task QueryCollectsMergedOutputUntilFinished()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();

        Task<ExecutionResult> execute = client.ExecuteAsync("r1", ExecutionMode.Query, "print(1)", null, Limit());
        Assert.Equal(("code", "print(1)"), runner.Receive());
        runner.Send("stdout", "a");
        runner.Send("stdout", "b");
        runner.Send("stderr", "err");
        runner.Send("stdout", "c");
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult result = await execute;

        Assert.Equal("r1", result.RunId);
        Assert.Equal(ExecutionStatus.Finished, result.Status);
        Assert.Equal(0, result.ExitCode);
        Assert.Equal([new("stdout", "ab"), new("stderr", "err"), new("stdout", "c")], result.Console);
        Assert.Null(client.ActiveRunId);
        Assert.Equal("""{"runId":"r1","status":"finished","exitCode":0,"console":[["stdout","ab"],["stderr","err"],["stdout","c"]],"options":null}""", result.ToJson());
    }

    [Fact]
    public async Task GarbageFramesFromTheRunnerAreIgnored()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();

        Task<ExecutionResult> execute = client.ExecuteAsync("r1", ExecutionMode.Query, "x", null, Limit());
        runner.Receive();
        runner.SendFrames(Encoding.ASCII.GetBytes("stdout"));
        runner.SendFrames(Encoding.ASCII.GetBytes("stdout"), Encoding.ASCII.GetBytes("three"), Encoding.ASCII.GetBytes("frames"));
        runner.SendFrames([0xff, 0x00], Encoding.ASCII.GetBytes("binary type"));
        runner.Send("no-such-type", "x");
        runner.Send("finished", "not json at all");
        runner.Send("stdout", "kept");
        runner.Send("finished", "{\"exitCode\": 3}");
        ExecutionResult result = await execute;

        // A finished with an unreadable payload still ends the run, without an exit code.
        Assert.Equal(ExecutionStatus.Finished, result.Status);
        Assert.Null(result.ExitCode);
        Assert.Empty(result.Console);
        Assert.True(client.IgnoredMessages >= 4);

        // The output after it belongs to no run and is ignored too. A status round trip first: the channel is
        // ordered, so once its reply is in, both trailing messages were read (messages carry no run id, and one
        // still queued when r2 starts would be taken as r2's).
        Task<IReadOnlyDictionary<string, object?>> status = client.GetStatusAsync(Limit());
        Assert.Equal("status", runner.Receive().Type);
        runner.Send("status", [0x81, 0xA1, (byte)'s', 0x01]); // msgpack {"s": 1}
        await status;
        Task<ExecutionResult> next = client.ExecuteAsync("r2", ExecutionMode.Query, "y", null, Limit());
        runner.Receive();
        runner.Send("stdout", "fresh");
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult second = await next;
        Assert.Equal([new("stdout", "fresh")], second.Console);
    }

    [Fact]
    public async Task MultiByteCharacterSplitAcrossMessagesIsDecodedWhole()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        byte[] text = Encoding.UTF8.GetBytes("x€😀y");

        Task<ExecutionResult> execute = client.ExecuteAsync("r1", ExecutionMode.Query, "", null, Limit());
        runner.Receive();
        runner.Send("stdout", text[..2]);
        runner.Send("stdout", text[2..5]);
        runner.Send("stdout", text[5..]);
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult result = await execute;

        Assert.Equal([new("stdout", "x€😀y")], result.Console);
    }

    [Fact]
    public async Task PendingOutputIsReturnedAsContinuedAfterTheFlushTimeout()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        var options = new ExecutionOptions { FlushTimeout = TimeSpan.FromMilliseconds(100) };

        Task<ExecutionResult> execute = client.ExecuteAsync("r1", ExecutionMode.Query, "", options, Limit());
        runner.Receive();
        runner.Send("stdout", "partial");
        ExecutionResult first = await execute;
        Task<ExecutionResult> more = client.ExecuteAsync("r1", ExecutionMode.Continue, "", options, Limit());
        runner.Send("stdout", "rest");
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult second = await more;

        Assert.Equal(ExecutionStatus.Continued, first.Status);
        Assert.Equal([new("stdout", "partial")], first.Console);
        Assert.Equal(ExecutionStatus.Finished, second.Status);
        Assert.Equal([new("stdout", "rest")], second.Console);
    }

    [Fact]
    public async Task ContinuedIsReturnedAfterTheFlushTimeoutEvenWithoutOutput()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        var options = new ExecutionOptions { FlushTimeout = TimeSpan.FromMilliseconds(200) };

        ExecutionResult quiet = await client.ExecuteAsync("r1", ExecutionMode.Query, "sleep", options, Limit());
        Assert.Equal(("code", "sleep"), runner.Receive());
        ExecutionResult stillQuiet = await client.ExecuteAsync("r1", ExecutionMode.Continue, "", options, Limit());
        Task<ExecutionResult> more = client.ExecuteAsync("r1", ExecutionMode.Continue, "", new ExecutionOptions { FlushTimeout = TimeSpan.FromMinutes(5) }, Limit());
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult done = await more;

        Assert.Equal(ExecutionStatus.Continued, quiet.Status);
        Assert.Empty(quiet.Console);
        Assert.Equal("""{"runId":"r1","status":"continued","exitCode":null,"console":[],"options":null}""", quiet.ToJson());
        Assert.Equal(ExecutionStatus.Continued, stillQuiet.Status);
        Assert.Equal((ExecutionStatus.Finished, 0), (done.Status, done.ExitCode));
    }

    [Fact]
    public async Task StreamingWithAFlushTimeoutEndsAsContinuedWithoutOutput()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        var options = new ExecutionOptions { StreamingFlushTimeout = TimeSpan.FromMilliseconds(200) };

        var events = new List<ExecutionEvent>();
        await foreach (ExecutionEvent e in client.ExecuteStreamingAsync("r1", ExecutionMode.Query, "sleep", options, Limit()))
        {
            events.Add(e);
        }

        ResultEvent end = Assert.IsType<ResultEvent>(Assert.Single(events));
        Assert.Equal(ExecutionStatus.Continued, end.Result.Status);
        Assert.Equal("r1", client.ActiveRunId);
    }

    [Fact]
    public async Task RunsAreQueuedAndStartInTheOrderTheyWereRequested()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();

        Task<ExecutionResult> first = client.ExecuteAsync("r1", ExecutionMode.Query, "1", null, Limit());
        Assert.Equal(("code", "1"), runner.Receive());
        Task<ExecutionResult> second = client.ExecuteAsync("r2", ExecutionMode.Query, "2", null, Limit());
        await Eventually.WaitAsync(() => client.QueuedRunIds.Count == 1, "r2 to be queued");
        Task<ExecutionResult> third = client.ExecuteAsync("r3", ExecutionMode.Query, "3", null, Limit());
        await Eventually.WaitAsync(() => client.QueuedRunIds.Count == 2, "r3 to be queued");

        Assert.Equal(["r2", "r3"], client.QueuedRunIds);
        Assert.False(runner.TryReceive(TimeSpan.FromMilliseconds(300)), "a queued run must not be sent while another runs");
        RunInProgressException duplicate = await Assert.ThrowsAsync<RunInProgressException>(
            () => client.ExecuteAsync("r2", ExecutionMode.Query, "again", null, Limit()));
        Assert.Contains("'r2' is already queued", duplicate.Message);
        await Assert.ThrowsAsync<RunInProgressException>(() => client.ExecuteAsync("r1", ExecutionMode.Query, "again", null, Limit()));
        await Assert.ThrowsAsync<RunInProgressException>(() => client.ExecuteAsync("r1", ExecutionMode.Continue, "", null, Limit()));
        NoActiveRunException notYet = await Assert.ThrowsAsync<NoActiveRunException>(() => client.ExecuteAsync("r3", ExecutionMode.Continue, "", null, Limit()));
        Assert.Contains("has not started yet", notYet.Message);
        Assert.False(second.IsCompleted);

        runner.Send("stdout", "one");
        runner.Send("finished", "{\"exitCode\": 0}");
        Assert.Equal([new("stdout", "one")], (await first).Console);
        Assert.Equal(("code", "2"), runner.Receive());
        Assert.Equal("r2", client.ActiveRunId);
        Assert.Equal(["r3"], client.QueuedRunIds);
        runner.Send("stdout", "two");
        runner.Send("finished", "{\"exitCode\": 2}");
        ExecutionResult secondResult = await second;
        Assert.Equal(("code", "3"), runner.Receive());
        runner.Send("stdout", "three");
        runner.Send("finished", "{\"exitCode\": 3}");
        ExecutionResult thirdResult = await third;

        Assert.Equal(("r2", 2, "two"), (secondResult.RunId, secondResult.ExitCode, secondResult.Console.Single().Data));
        Assert.Equal(("r3", 3, "three"), (thirdResult.RunId, thirdResult.ExitCode, thirdResult.Console.Single().Data));
        Assert.Null(client.ActiveRunId);
    }

    [Fact]
    public async Task TheQueueIsBoundedWithAClearError()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect(maxQueuedRuns: 2);

        _ = client.ExecuteAsync("r1", ExecutionMode.Query, "1", null, Limit());
        runner.Receive();
        _ = client.ExecuteAsync("r2", ExecutionMode.Query, "2", null, Limit());
        _ = client.ExecuteAsync("r3", ExecutionMode.Query, "3", null, Limit());
        await Eventually.WaitAsync(() => client.QueuedRunIds.Count == 2, "two runs to be queued");
        RunQueueFullException full = await Assert.ThrowsAsync<RunQueueFullException>(() => client.ExecuteAsync("r4", ExecutionMode.Query, "4", null, Limit()));

        Assert.Contains("cannot queue run 'r4'", full.Message);
        Assert.Contains("at most 2", full.Message);
        Assert.Contains("'r1'", full.Message);
    }

    [Fact]
    public async Task ACancelledQueuedRunNeverStarts()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        using var cancel = new CancellationTokenSource();

        Task<ExecutionResult> first = client.ExecuteAsync("r1", ExecutionMode.Query, "1", null, Limit());
        runner.Receive();
        Task<ExecutionResult> gaveUp = client.ExecuteAsync("r2", ExecutionMode.Query, "2", null, cancel.Token);
        await Eventually.WaitAsync(() => client.QueuedRunIds.Count == 1, "r2 to be queued");
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => gaveUp);
        Assert.Empty(client.QueuedRunIds);
        Task<ExecutionResult> third = client.ExecuteAsync("r3", ExecutionMode.Query, "3", null, Limit());
        runner.Send("finished", "{\"exitCode\": 0}");
        await first;

        Assert.Equal(("code", "3"), runner.Receive());
        runner.Send("finished", "{\"exitCode\": 0}");
        Assert.Equal("r3", (await third).RunId);
    }

    [Fact]
    public async Task ARunWhoseEndNobodyCollectsGivesWayAfterTheGrace()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect(uncollectedEndGrace: TimeSpan.FromMilliseconds(300));
        var quick = new ExecutionOptions { FlushTimeout = TimeSpan.FromMilliseconds(50) };

        ExecutionResult started = await client.ExecuteAsync("r1", ExecutionMode.Query, "1", quick, Limit());
        runner.Receive();
        runner.Send("finished", "{\"exitCode\": 0}");
        await Eventually.WaitAsync(() => client.ActiveRunHasPendingEnd, "r1's end to arrive");
        Task<ExecutionResult> second = client.ExecuteAsync("r2", ExecutionMode.Query, "2", null, Limit());

        Assert.Equal(ExecutionStatus.Continued, started.Status);
        Assert.Equal(("code", "2"), runner.Receive());
        runner.Send("finished", "{\"exitCode\": 0}");
        Assert.Equal(ExecutionStatus.Finished, (await second).Status);
        await Assert.ThrowsAsync<NoActiveRunException>(() => client.ExecuteAsync("r1", ExecutionMode.Continue, "", null, Limit()));
    }

    [Fact]
    public async Task AnUncollectedRunPastItsExecTimeoutIsInterruptedBeforeTheNextStarts()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        var options = new ExecutionOptions { FlushTimeout = TimeSpan.FromMilliseconds(50), ExecTimeout = TimeSpan.FromMilliseconds(300) };

        await client.ExecuteAsync("r1", ExecutionMode.Query, "loop", options, Limit());
        Assert.Equal(("code", "loop"), runner.Receive());
        Task<ExecutionResult> second = client.ExecuteAsync("r2", ExecutionMode.Query, "2", null, Limit());

        Assert.Equal(("interrupt", ""), runner.Receive());
        Assert.Equal(("code", "2"), runner.Receive());
        runner.Send("stderr", "KeyboardInterrupt"); // late output of r1
        runner.Send("finished", "{\"exitCode\": 1}");  // r1's end
        runner.Send("stdout", "r2 output");
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult result = await second;
        Assert.Equal([new("stdout", "r2 output")], result.Console);
    }

    [Fact]
    public async Task MediaBecomesAMimeAndDataItemAndHtmlAndLogAreKept()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();

        Task<ExecutionResult> execute = client.ExecuteAsync("r1", ExecutionMode.Query, "plot()", null, Limit());
        runner.Receive();
        runner.Send("stdout", "a");
        runner.Send("media", """{"type": "image/png", "data": "data:image/png;base64,iVBORw0KGgo="}""");
        runner.Send("media", """{"type": "image/svg+xml", "data": "<svg/>"}""");
        runner.Send("stdout", "b");
        runner.Send("media", "not json");
        runner.Send("html", "<b>x</b>");
        runner.Send("log", "a log line");
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult result = await execute;

        Assert.Equal(
        [
            new("stdout", "a"),
            ConsoleItem.Media("image/png", "data:image/png;base64,iVBORw0KGgo="),
            ConsoleItem.Media("image/svg+xml", "<svg/>"),
            new("stdout", "b"),
            ConsoleItem.Media("", "not json"),
            new("html", "<b>x</b>"),
            new("log", "a log line"),
        ], result.Console);
        string json = result.ToJson();
        Assert.Contains("""["media",["image/png","data:image/png;base64,iVBORw0KGgo="]]""", json);
        Assert.Contains("""["stdout","b"]""", json);
        Assert.Equal(ConsoleItem.Media("image/svg+xml", "<svg/>"), JsonSerializer.Deserialize<ConsoleItem>("""["media",["image/svg+xml","<svg/>"]]"""));
        Assert.Equal(new ConsoleItem("stdout", "x"), JsonSerializer.Deserialize<ConsoleItem>("""["stdout","x"]"""));
    }

    [Fact]
    public async Task BackendAiStatusAndLogLinesOutsideARunAreHandled()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        long ignoredBefore = client.IgnoredMessages;

        // Backend.AI's runner logs to stderr between runs; half a character must not leak into the next run.
        runner.Send("stderr", "INFO runner started\n");
        runner.Send("stderr", Encoding.UTF8.GetBytes("€")[..2]);
        Task<IReadOnlyDictionary<string, object?>> status = client.GetStatusAsync(Limit());
        Assert.Equal("status", runner.Receive().Type);
        // msgpack {"started_at": 1.5}: all Backend.AI's runner sends.
        runner.Send("status", [0x81, 0xaa, .. "started_at"u8, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        IReadOnlyDictionary<string, object?> map = await status;
        Task<ExecutionResult> execute = client.ExecuteAsync("r1", ExecutionMode.Query, "x", null, Limit());
        runner.Receive();
        runner.Send("stderr", "mine");
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult result = await execute;

        Assert.Equal(1.5, map["started_at"]);
        Assert.Single(map);
        Assert.Equal(2, client.IgnoredMessages - ignoredBefore);
        Assert.Equal([new("stderr", "mine")], result.Console);
    }

    [Fact]
    public async Task StartServiceIsSentInBackendAisShape()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();

        Task<ServiceResult> plain = client.StartServiceAsync(new ServiceDefinition { Name = "jupyter", Ports = [8090, 8091], Protocol = "http" }, Limit());
        Assert.Equal(("start-service", """{"name":"jupyter","port":8090,"ports":[8090,8091],"protocol":"http","options":{}}"""), runner.Receive());
        runner.Send("service-result", """{"status": "started"}""");
        Assert.True((await plain).Succeeded);

        Task<ServiceResult> full = client.StartServiceAsync(new ServiceDefinition
        {
            Name = "web",
            Ports = [8080],
            Arguments = new Dictionary<string, IReadOnlyList<string>> { ["--flag"] = [], ["--one"] = ["1"], ["--two"] = ["a", "b"] },
            Envs = new Dictionary<string, string> { ["MODE"] = "x" },
            Command = ["python3", "-m", "http.server", "{port}"],
            Environment = new Dictionary<string, string> { ["K"] = "V" },
            StartTimeoutSeconds = 5,
        }, Limit());
        Assert.Equal(("start-service",
            """{"name":"web","port":8080,"ports":[8080],"protocol":"tcp","options":{"arguments":{"--flag":null,"--one":"1","--two":["a","b"]},"envs":{"MODE":"x"}},"command":["python3","-m","http.server","{port}"],"env":{"K":"V"},"startTimeoutSeconds":5}"""),
            runner.Receive());
        runner.Send("service-result", """{"status": "failed", "error": "unsupported service: web"}""");
        ServiceResult failed = await full;
        Assert.False(failed.Succeeded);
        Assert.Equal("unsupported service: web", failed.Error);
    }

    [Fact]
    public async Task GetAppsSendsTheNameFilterAndParsesTheAnswer()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();

        Task<AppsResult> one = client.GetAppsAsync("jupyter", Limit());
        Assert.Equal(("get-apps", "jupyter"), runner.Receive());
        runner.Send("apps-result", """{"status": "done", "data": [{"name": "jupyter", "url_template": "http://{host}:{port}/", "allowed_arguments": ["--NotebookApp.token"], "allowed_envs": ["JUPYTER_TOKEN"]}, {"name": "ttyd"}]}""");
        AppsResult apps = await one;
        Task<AppsResult> all = client.GetAppsAsync(Limit());
        Assert.Equal(("get-apps", ""), runner.Receive());
        runner.Send("apps-result", "[1, 2]");

        Assert.Equal("done", apps.Status);
        Assert.Equal(["jupyter", "ttyd"], apps.Apps.Select(app => app.Name));
        Assert.Equal("http://{host}:{port}/", apps.Apps[0].UrlTemplate);
        Assert.Equal(["--NotebookApp.token"], apps.Apps[0].AllowedArguments!);
        Assert.Equal(["JUPYTER_TOKEN"], apps.Apps[0].AllowedEnvs!);
        Assert.Null(apps.Apps[1].UrlTemplate);
        Assert.Null(apps.Apps[1].AllowedArguments);
        InvalidDataException bad = await Assert.ThrowsAsync<InvalidDataException>(() => all);
        Assert.Contains("not a JSON object", bad.Message);
    }

    [Fact]
    public async Task WaitingInputThenInputContinuesTheSameRun()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();

        Task<ExecutionResult> asking = client.ExecuteAsync("r1", ExecutionMode.Query, "input()", null, Limit());
        runner.Receive();
        runner.Send("stdout", "Password: ");
        runner.Send("waiting-input", "{\"is_password\": true}");
        ExecutionResult waiting = await asking;
        Task<ExecutionResult> answering = client.ExecuteAsync("r1", ExecutionMode.Input, "secret", null, Limit());
        Assert.Equal(("input", "secret"), runner.Receive());
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult done = await answering;

        Assert.Equal(ExecutionStatus.WaitingInput, waiting.Status);
        Assert.True(waiting.Options!.Value.GetProperty("is_password").GetBoolean());
        Assert.Equal("r1", client.ActiveRunId is null ? "r1" : client.ActiveRunId);
        Assert.Equal(ExecutionStatus.Finished, done.Status);
    }

    [Fact]
    public async Task BatchSendsThreeStepsAndReportsEachEnd()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        var options = new ExecutionOptions { Clean = "make clean", Build = "*", Exec = "./main" };

        Task<ExecutionResult> clean = client.ExecuteAsync("b1", ExecutionMode.Batch, "", options, Limit());
        Assert.Equal(("clean", "make clean"), runner.Receive());
        Assert.Equal(("build", "*"), runner.Receive());
        Assert.Equal(("exec", "./main"), runner.Receive());
        runner.Send("clean-finished", "{\"exitCode\": 0}");
        runner.Send("stdout", "compiling");
        runner.Send("build-finished", "{\"exitCode\": 0}");
        runner.Send("stdout", "running");
        runner.Send("finished", "{\"exitCode\": 9}");

        ExecutionResult cleaned = await clean;
        ExecutionResult built = await client.ExecuteAsync("b1", ExecutionMode.Continue, "", null, Limit());
        ExecutionResult ran = await client.ExecuteAsync("b1", ExecutionMode.Continue, "", null, Limit());

        Assert.Equal((ExecutionStatus.CleanFinished, 0), (cleaned.Status, cleaned.ExitCode));
        Assert.Equal((ExecutionStatus.BuildFinished, 0), (built.Status, built.ExitCode));
        Assert.Equal([new("stdout", "compiling")], built.Console);
        Assert.Equal((ExecutionStatus.Finished, 9), (ran.Status, ran.ExitCode));
        Assert.Null(client.ActiveRunId);
    }

    [Fact]
    public async Task ExecTimeoutInterruptsAndSkipsTheAbandonedRunsLateMessages()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        var options = new ExecutionOptions { ExecTimeout = TimeSpan.FromMilliseconds(200) };

        ExecutionResult timedOut = await client.ExecuteAsync("r1", ExecutionMode.Query, "loop", options, Limit());
        Assert.Equal(("code", "loop"), runner.Receive());
        Assert.Equal(("interrupt", ""), runner.Receive());
        Assert.Equal(ExecutionStatus.ExecTimeout, timedOut.Status);
        Assert.Null(client.ActiveRunId);

        Task<ExecutionResult> next = client.ExecuteAsync("r2", ExecutionMode.Query, "ok", null, Limit());
        runner.Receive();
        runner.Send("stderr", "KeyboardInterrupt"); // late output of r1
        runner.Send("finished", "{\"exitCode\": 1}");  // r1's end
        runner.Send("stdout", "r2 output");
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult second = await next;

        Assert.Equal([new("stdout", "r2 output")], second.Console);
        Assert.Equal(0, second.ExitCode);
    }

    [Fact]
    public async Task StreamingYieldsOutputAsItArrives()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        var received = new List<ExecutionEvent>();

        await using IAsyncEnumerator<ExecutionEvent> events = client.ExecuteStreamingAsync("r1", ExecutionMode.Query, "", null, Limit()).GetAsyncEnumerator();
        Task<bool> first = events.MoveNextAsync().AsTask();
        runner.Receive();
        runner.Send("stdout", "one");
        Assert.True(await first);
        received.Add(events.Current);
        runner.Send("stdout", "two");
        runner.Send("finished", "{\"exitCode\": 0}");
        while (await events.MoveNextAsync())
        {
            received.Add(events.Current);
        }

        Assert.Equal(new OutputEvent(new ConsoleItem("stdout", "one")), received[0]);
        ResultEvent end = Assert.IsType<ResultEvent>(received[^1]);
        Assert.Equal(0, end.Result.ExitCode);
        Assert.Equal("onetwo", string.Concat(received.OfType<OutputEvent>().Select(item => item.Item.Data)));
    }

    [Fact]
    public async Task CancelledCollectKeepsTheOutputForTheNextCall()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        using var cancel = new CancellationTokenSource();
        var options = new ExecutionOptions { FlushTimeout = TimeSpan.FromMinutes(5) };

        Task<ExecutionResult> execute = client.ExecuteAsync("r1", ExecutionMode.Query, "", options, cancel.Token);
        runner.Receive();
        runner.Send("stdout", "kept");
        // Whether or not "kept" was drained before the cancel, it must come out of the next call.
        await Task.Delay(200);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => execute);
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult result = await client.ExecuteAsync("r1", ExecutionMode.Continue, "", null, Limit());

        Assert.Equal([new("stdout", "kept")], result.Console);
    }

    [Fact]
    public async Task RepliesAreMatchedByType()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();

        Task<IReadOnlyDictionary<string, object?>> status = client.GetStatusAsync(Limit());
        Task<IReadOnlyList<string>> completion = client.CompleteAsync(new CompletionRequest { Code = "os.pa" }, Limit());
        Assert.Equal("status", runner.Receive().Type);
        (string type, string payload) = runner.Receive();
        Assert.Equal("complete", type);
        Assert.Equal("os.pa", JsonDocument.Parse(payload).RootElement.GetProperty("code").GetString());
        runner.Send("completion", "{\"suggestions\": [\"os.path\", \"os.pardir\"]}");
        // msgpack {"status": "idle", "n": 5}
        runner.Send("status", [0x82, 0xa6, .. "status"u8, 0xa4, .. "idle"u8, 0xa1, (byte)'n', 0x05]);

        Assert.Equal(["os.path", "os.pardir"], await completion);
        IReadOnlyDictionary<string, object?> map = await status;
        Assert.Equal("idle", map["status"]);
        Assert.Equal(5L, map["n"]);
    }

    [Fact]
    public async Task UncollectedOutputDoesNotGrowWithoutBound()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect(maxBufferedCharacters: 64 * 1024);
        var options = new ExecutionOptions { FlushTimeout = TimeSpan.FromMilliseconds(1) };

        ExecutionResult started = await StartWithOneChunkAsync(client, runner, options);
        string chunk = new('z', 1024);
        for (int i = 0; i < 2048; i++)
        {
            runner.Send("stdout", chunk); // 2 MiB nobody collects
        }
        runner.Send("stdout", "tail");
        runner.Send("finished", "{\"exitCode\": 0}");
        await Eventually.WaitAsync(() => client.ActiveRunHasPendingEnd, "the client to receive the run's end behind 2 MiB of output");
        ExecutionResult result = await client.ExecuteAsync("r1", ExecutionMode.Continue, "", new ExecutionOptions(), Limit());

        Assert.Equal(ExecutionStatus.Continued, started.Status);
        Assert.Equal(ExecutionStatus.Finished, result.Status);
        long kept = result.Console.Where(item => item.Kind == "stdout").Sum(item => (long)item.Data.Length);
        Assert.True(kept <= 64 * 1024, $"kept {kept} characters");
        Assert.True(result.DroppedCharacters > 0);
        Assert.Equal(2048 * 1024 + 4, kept + result.DroppedCharacters);
        Assert.EndsWith("tail", result.Console[^1].Data);
        Assert.StartsWith("[kata-agent:", result.Console[0].Data);
    }

    [Fact]
    public async Task RunEndsWhenTheRunnerGoesAway()
    {
        var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();
        Task<ExecutionResult> execute = client.ExecuteAsync("r1", ExecutionMode.Query, "", null, Limit());
        runner.Receive();
        runner.Send("stdout", "before");
        await Eventually.WaitAsync(() => client.IsConnected, "the client to connect to the fake runner");

        runner.Dispose();
        ExecutionResult result = await execute;

        Assert.Equal(ExecutionStatus.Finished, result.Status);
        Assert.Null(result.ExitCode);
        Assert.Contains("lost the connection", result.Console[^1].Data);
        Assert.Null(client.ActiveRunId);
    }

    private static async Task<ExecutionResult> StartWithOneChunkAsync(KernelRunnerClient client, FakeRunner runner, ExecutionOptions options)
    {
        Task<ExecutionResult> execute = client.ExecuteAsync("r1", ExecutionMode.Query, "", options, Limit());
        runner.Receive();
        runner.Send("stdout", "first");
        ExecutionResult result = await execute;
        // A short flush timeout can pass before "first" arrives: continued comes back empty then.
        while (result.Console.Count == 0)
        {
            result = await client.ExecuteAsync("r1", ExecutionMode.Continue, "", options, Limit());
        }
        return result;
    }
}
