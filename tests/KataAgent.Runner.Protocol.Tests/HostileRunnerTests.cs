namespace KataAgent.Runner.Protocol.Tests;

/// <summary>
/// A runner the image controls (LD_PRELOAD, /etc/ld.so.preload) may send anything: what it sends must end
/// at most that session's run, with a clear error, and never the agent.
/// </summary>
public sealed class HostileRunnerTests
{
    private static CancellationToken Limit() => new CancellationTokenSource(TimeSpan.FromSeconds(120)).Token;

    private static byte[] DeepStatus(int depth)
    {
        // {"a": [[[[...nil...]]]]}: 0x81 map of one, 0xa1 'a' key, then `depth` arrays of one, then nil.
        var bytes = new byte[3 + depth + 1];
        bytes[0] = 0x81;
        bytes[1] = 0xa1;
        bytes[2] = (byte)'a';
        bytes.AsSpan(3, depth).Fill(0x91);
        bytes[^1] = 0xc0;
        return bytes;
    }

    [Fact]
    public void A_100000_deep_status_is_a_parse_error_not_a_stack_overflow()
    {
        var error = Assert.Throws<InvalidDataException>(() => MessagePackMapReader.Read(DeepStatus(100_000)));
        Assert.Contains("deeper than 32", error.Message);
    }

    [Fact]
    public void A_status_at_the_depth_limit_still_reads()
    {
        var status = MessagePackMapReader.Read(DeepStatus(MessagePackMapReader.MaxDepth - 1));
        Assert.IsType<List<object?>>(status["a"]);
    }

    [Fact]
    public void Truncated_and_lying_headers_are_parse_errors()
    {
        // An array header claiming 2^32-1 elements with nothing after it; a string header longer than the payload.
        Assert.Throws<InvalidDataException>(() => MessagePackMapReader.Read(new byte[] { 0x81, 0xa1, (byte)'a', 0xdd, 0xff, 0xff, 0xff, 0xff }));
        Assert.Throws<InvalidDataException>(() => MessagePackMapReader.Read(new byte[] { 0x81, 0xda, 0xff, 0xff, (byte)'a' }));
        Assert.Throws<InvalidDataException>(() => MessagePackMapReader.Read(new byte[] { 0x81 }));
    }

    [Fact]
    public async Task A_deep_status_reply_from_a_runner_fails_that_request_and_the_client_keeps_working()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect();

        Task<IReadOnlyDictionary<string, object?>> status = client.GetStatusAsync(Limit());
        Assert.Equal("status", runner.Receive().Type);
        runner.Send("status", DeepStatus(100_000));
        await Assert.ThrowsAsync<InvalidDataException>(() => status);

        Task<IReadOnlyDictionary<string, object?>> next = client.GetStatusAsync(Limit());
        runner.Receive();
        runner.Send("status", new byte[] { 0x81, 0xa1, (byte)'s', 0xa2, (byte)'o', (byte)'k' });
        Assert.Equal("ok", (await next)["s"]);
    }

    [Fact]
    public async Task A_message_over_the_limit_ends_the_run_with_an_error_and_an_event_and_the_client_recovers()
    {
        using var runner = new FakeRunner();
        const long Limit1MiB = 1024 * 1024;
        await using KernelRunnerClient client = runner.Connect(maxMessageSize: Limit1MiB);
        var faults = new List<string>();
        client.Faulted += reason =>
        {
            lock (faults)
            {
                faults.Add(reason);
            }
        };

        Task<ExecutionResult> execute = client.ExecuteAsync("r1", ExecutionMode.Query, "x", null, Limit());
        runner.Receive();
        runner.Send("stdout", "before ");
        runner.Send("stdout", new byte[8 * Limit1MiB]);
        ExecutionResult result = await execute;

        Assert.Equal(ExecutionStatus.Finished, result.Status);
        Assert.Null(result.ExitCode);
        string stderr = string.Concat(result.Console.Where(item => item.Kind == "stderr").Select(item => item.Data));
        Assert.Contains("lost the connection to the kernel runner", stderr);
        Assert.Contains($"limit of {Limit1MiB} bytes", stderr);
        Assert.DoesNotContain(result.Console, item => item.Data.Length > Limit1MiB);
        lock (faults)
        {
            Assert.Contains(faults, reason => reason.Contains($"limit of {Limit1MiB} bytes", StringComparison.Ordinal));
        }

        // ZeroMQ reconnects: the next run works with messages under the limit.
        Task<ExecutionResult> next = client.ExecuteAsync("r2", ExecutionMode.Query, "y", null, Limit());
        Assert.Equal(("code", "y"), runner.Receive());
        runner.Send("stdout", "fine");
        runner.Send("finished", "{\"exitCode\": 0}");
        ExecutionResult second = await next;
        Assert.Equal(0, second.ExitCode);
        Assert.Equal("fine", string.Concat(second.Console.Select(item => item.Data)));
    }

    [Fact]
    public async Task A_throwing_fault_subscriber_does_not_take_the_client_thread_down()
    {
        using var runner = new FakeRunner();
        await using KernelRunnerClient client = runner.Connect(maxMessageSize: 64 * 1024);
        client.Faulted += _ => throw new InvalidOperationException("a buggy subscriber");

        Task<ExecutionResult> execute = client.ExecuteAsync("r1", ExecutionMode.Query, "x", null, Limit());
        runner.Receive();
        runner.Send("stdout", new byte[256 * 1024]);
        ExecutionResult result = await execute;
        Assert.Contains("lost the connection", result.Console[^1].Data);

        // The poller thread survived: messages still flow both ways.
        Task<ExecutionResult> next = client.ExecuteAsync("r2", ExecutionMode.Query, "y", null, Limit());
        Assert.Equal(("code", "y"), runner.Receive());
        runner.Send("finished", "{\"exitCode\": 5}");
        Assert.Equal(5, (await next).ExitCode);
    }

    [Fact]
    public void A_maximum_message_size_below_64KiB_is_refused_with_a_reason()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new KernelRunnerClient(new KernelRunnerClientOptions
        {
            InputPort = 1, OutputPort = 2, MaxMessageSize = 1000,
        }));
        Assert.Contains("at least 64 KiB", error.Message);
    }
}
