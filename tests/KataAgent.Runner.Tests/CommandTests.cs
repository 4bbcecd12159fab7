using System.Text;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Runner.Tests;

/// <summary>The cmd-* extension against the published runner: stdin, exit codes, a PTY with resize, signals, bad requests.</summary>
[Collection(RunnerCollection.Name)]
public sealed class CommandTests(PublishedRunner runner)
{
    [Fact]
    public async Task CatEchoesStdinAndExitsZero()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        RunnerCommand command = await host.Client.StartCommandAsync(new CommandSpec { Id = "cat1", Arguments = ["cat"], Stdin = true },
            cancellationToken: limit);
        Assert.True(command.Pid > 0);
        await host.Client.SendCommandInputAsync("cat1", "hello from stdin\n"u8.ToArray(), limit);
        await host.Client.SendCommandInputAsync("cat1", "second line"u8.ToArray(), limit);
        await host.Client.CloseCommandInputAsync("cat1", limit);
        (string stdout, string stderr, CommandExit exit) = await CollectAsync(command, limit);
        Assert.Equal("hello from stdin\nsecond line", stdout);
        Assert.Equal("", stderr);
        Assert.Equal(new CommandExit(0, null), exit);
    }

    [Fact]
    public async Task AFailingCommandReportsItsExitCodeAndStderr()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        var spec = new CommandSpec
        {
            Id = "fail", Shell = "echo out; echo err >&2; echo $KATA_TEST_MARKER $EXTRA; pwd; exit 7",
            Environment = new Dictionary<string, string> { ["EXTRA"] = "given" }, WorkingDirectory = "sub",
        };
        Directory.CreateDirectory(Path.Combine(host.WorkDir, "sub"));
        RunnerCommand command = await host.Client.StartCommandAsync(spec, cancellationToken: limit);
        (string stdout, string stderr, CommandExit exit) = await CollectAsync(command, limit);
        Assert.Equal($"out\nfrom-environ given\n{Path.Combine(host.WorkDir, "sub")}\n", stdout);
        Assert.Equal("err\n", stderr);
        Assert.Equal(7, exit.ExitCode);
        Assert.Null(exit.Signal);
    }

    [Fact]
    public async Task APtyProgramSeesItsNewSizeAfterAResize()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        RunnerCommand command = await host.Client.StartCommandAsync(new CommandSpec
        {
            Id = "tty", Shell = "stty size; test -t 0 && echo is-a-tty; read line; stty size; echo got=$line",
            Terminal = new TerminalSize(80, 24),
        }, cancellationToken: limit);
        var seen = new StringBuilder();
        await using IAsyncEnumerator<CommandEvent> events = command.ReadEventsAsync(limit).GetAsyncEnumerator(limit);
        await ReadUntilAsync(events, seen, "is-a-tty");
        Assert.Contains("24 80", seen.ToString(), StringComparison.Ordinal);
        await host.Client.ResizeCommandAsync("tty", new TerminalSize(132, 40), limit);
        await host.Client.SendCommandInputAsync("tty", "resized\n"u8.ToArray(), limit);
        CommandExit exit = await ReadUntilAsync(events, seen, null) ?? throw new InvalidOperationException("no exit");
        Assert.Equal(0, exit.ExitCode);
        string all = seen.ToString();
        Assert.Contains("40 132", all, StringComparison.Ordinal);
        Assert.Contains("got=resized", all, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ABackgroundCommandSignalledWithTermReportsTheSignal()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        RunnerCommand sleeper = await host.Client.StartCommandAsync(new CommandSpec { Id = "bg", Arguments = ["sleep", "600"] },
            cancellationToken: limit);
        // The interpreter keeps working while the command runs.
        ExecutionResult run = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "print(6 * 7)", limit);
        Assert.Equal("42\n", run.Text("stdout"));
        IReadOnlyList<RunnerCommandInfo> listed = await host.Client.ListRunnerCommandsAsync(limit);
        Assert.Contains(listed, info => info.Id == "bg" && info.Pid == sleeper.Pid && !info.Terminal);
        Assert.False(sleeper.Exited.IsCompleted);

        await host.Client.SignalCommandAsync("bg", CommandSignals.Parse("TERM"), limit);
        CommandExit exit = await sleeper.Exited.WaitAsync(limit);
        Assert.Equal(new CommandExit(null, 15), exit);
        Assert.Equal(143, exit.ShellExitCode);
        Assert.Null(host.Client.FindCommand("bg"));
        await Eventually.WaitAsync(() => host.Client.ListRunnerCommandsAsync(limit), commands => commands.Count == 0,
            "the runner to forget the ended command", cancellationToken: limit);
    }

    [Fact]
    public async Task BadRequestsAreRefusedWithTheProblemNamed()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();
        async Task<string> RefusedAsync(CommandSpec spec) =>
            (await Assert.ThrowsAsync<CommandRejectedException>(() => host.Client.StartCommandAsync(spec, cancellationToken: limit))).Message;

        Assert.Contains("argv is empty", await RefusedAsync(new CommandSpec { Id = "e1", Arguments = [] }), StringComparison.Ordinal);
        Assert.Contains("exactly one of argv", await RefusedAsync(new CommandSpec { Id = "e2" }), StringComparison.Ordinal);
        Assert.Contains("command not found: no-such-program-xyz",
            await RefusedAsync(new CommandSpec { Id = "e3", Arguments = ["no-such-program-xyz"] }), StringComparison.Ordinal);
        Assert.Contains("does not exist", await RefusedAsync(new CommandSpec { Id = "e4", Arguments = ["true"], WorkingDirectory = "nope" }),
            StringComparison.Ordinal);
        Assert.Contains("cols and rows", await RefusedAsync(new CommandSpec { Id = "e5", Arguments = ["true"], Terminal = new TerminalSize(0, 5) }),
            StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => CommandSignals.Parse("NOPE"));
        Assert.Throws<ArgumentException>(() => CommandSignals.Parse("99"));

        RunnerCommand sleeper = await host.Client.StartCommandAsync(new CommandSpec { Id = "dup", Arguments = ["sleep", "600"] }, cancellationToken: limit);
        Assert.Contains("already running", await RefusedAsync(new CommandSpec { Id = "dup", Arguments = ["true"] }), StringComparison.Ordinal);
        // Messages for a command that does not exist are ignored by the runner (and logged), which keeps serving.
        await host.Client.SignalCommandAsync("no-such-command", 15, limit);
        await Eventually.WaitAsync(() => host.Log, log => log.Contains("ignored cmd-signal for 'no-such-command'", StringComparison.Ordinal),
            "the runner to log the unknown command id", cancellationToken: limit);
        await host.Client.SignalCommandAsync("dup", 9, limit);
        Assert.Equal(9, (await sleeper.Exited.WaitAsync(limit)).Signal);
    }

    [Fact]
    public async Task ManyCommandsBeyondTheLimitAreRefused()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit(300);
        var started = new List<RunnerCommand>();
        for (int i = 0; i < 32; i++)
        {
            started.Add(await host.Client.StartCommandAsync(new CommandSpec { Id = $"s{i}", Arguments = ["sleep", "600"] }, cancellationToken: limit));
        }
        CommandRejectedException refused = await Assert.ThrowsAsync<CommandRejectedException>(() =>
            host.Client.StartCommandAsync(new CommandSpec { Id = "one-too-many", Arguments = ["true"] }, cancellationToken: limit));
        Assert.Contains("at most 32", refused.Message, StringComparison.Ordinal);
        // Stopping the runner stops its commands' process groups.
        Assert.Equal(0, await host.StopAsync(TimeSpan.FromSeconds(60)));
        foreach (RunnerCommand command in started)
        {
            Assert.False(ProcessExists(command.Pid), $"pid {command.Pid} of {command.Id} outlived the runner");
        }
    }

    private static bool ProcessExists(int pid) =>
        File.Exists($"/proc/{pid}/stat") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal);

    private static async Task<CommandExit?> ReadUntilAsync(IAsyncEnumerator<CommandEvent> events, StringBuilder seen, string? marker)
    {
        while (await events.MoveNextAsync())
        {
            switch (events.Current)
            {
                case CommandOutput output:
                    seen.Append(Encoding.UTF8.GetString(output.Data));
                    if (marker is not null && seen.ToString().Contains(marker, StringComparison.Ordinal))
                    {
                        return null;
                    }
                    break;
                case CommandExit exit:
                    return exit;
            }
        }
        throw new InvalidOperationException($"the events ended without {marker ?? "an exit"}; seen: {seen}");
    }

    private static async Task<(string Stdout, string Stderr, CommandExit Exit)> CollectAsync(RunnerCommand command, CancellationToken limit)
    {
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        await foreach (CommandEvent item in command.ReadEventsAsync(limit))
        {
            switch (item)
            {
                case CommandOutput output:
                    (output.Stream == "stderr" ? stderr : stdout).Append(Encoding.UTF8.GetString(output.Data));
                    break;
                case CommandExit exit:
                    return (stdout.ToString(), stderr.ToString(), exit);
            }
        }
        throw new InvalidOperationException("no exit event");
    }
}
