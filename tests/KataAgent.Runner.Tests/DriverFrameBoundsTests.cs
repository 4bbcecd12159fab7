using System.Text;
using KataAgent.Runner.Protocol;

namespace KataAgent.Runner.Tests;

/// <summary>
/// User code shares the interpreter with the driver and can write to its event channel (fd 4) directly.
/// Whatever it writes there, the runner never holds a whole frame it did not cap, never sends the agent a
/// message over 1 MiB, and a frame the driver would never write stops the interpreter with a clear error.
/// The client here refuses messages over 1 MiB + 1 KiB: a runner that sent one would cut the run short.
/// </summary>
[Collection(RunnerCollection.Name)]
public sealed class DriverFrameBoundsTests(PublishedRunner runner)
{
    private const long OneMiBAndABit = (1 << 20) + 1024;

    private static async Task<(ExecutionResult Result, long StdoutCharacters, string Stderr, string Tail)> RunCountingAsync(
        KernelRunnerClient client, string code)
    {
        long characters = 0;
        var stderr = new StringBuilder();
        var tail = new StringBuilder();
        ExecutionResult? result = null;
        await foreach (ExecutionEvent item in client.ExecuteStreamingAsync("r" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
            null, RunnerTestHelpers.Limit(600)))
        {
            switch (item)
            {
                case OutputEvent { Item: { Kind: "stdout" } output }:
                    characters += output.Data.Length;
                    tail.Append(output.Data.Length > 64 ? output.Data[^64..] : output.Data);
                    if (tail.Length > 256)
                    {
                        tail.Remove(0, tail.Length - 256);
                    }
                    break;
                case OutputEvent { Item: { Kind: "stderr" } error }:
                    stderr.Append(error.Data);
                    break;
                case ResultEvent end:
                    result = end.Result;
                    break;
            }
        }
        return (result!, characters, stderr.ToString(), tail.ToString());
    }

    [Fact]
    public async Task A_64MiB_print_reaches_the_agent_in_messages_of_at_most_1MiB()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, maxMessageSize: OneMiBAndABit);

        var (result, characters, stderr, tail) = await RunCountingAsync(host.Client, "print('x' * (64 << 20)); print('done')");

        Assert.True(result.ExitCode == 0, $"exit {result.ExitCode}, stderr: {stderr}");
        Assert.DoesNotContain("lost the connection", stderr);
        Assert.EndsWith("done\n", tail);
        Assert.Equal((64L << 20) + 1 + 5, characters + result.DroppedCharacters);
    }

    [Fact]
    public async Task A_256MiB_frame_written_to_fd4_is_streamed_not_buffered()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, maxMessageSize: OneMiBAndABit);
        const string Code = """
            import os, struct
            os.write(4, struct.pack('>cI', b'o', 256 << 20))
            chunk = b'y' * (1 << 20)
            for _ in range(256):
                os.write(4, chunk)
            print('after the frame')
            """;

        var (result, characters, stderr, tail) = await RunCountingAsync(host.Client, Code);

        Assert.True(result.ExitCode == 0, $"exit {result.ExitCode}, stderr: {stderr}");
        Assert.EndsWith("after the frame\n", tail);
        Assert.Equal((256L << 20) + "after the frame\n".Length, characters + result.DroppedCharacters);
        // Streamed: the runner's peak memory stayed far below the frame.
        long peakKiB = PeakRssKiB(host.Pid);
        Assert.True(peakKiB < 128 * 1024, $"the runner's peak RSS was {peakKiB} KiB for a 256 MiB frame");
    }

    [Theory]
    [InlineData("os.write(4, b'Z' + struct.pack('>I', 5) + b'hello')", "unknown kind 0x5a")]
    [InlineData("os.write(4, struct.pack('>cI', b'f', 3 << 30))", "control frames are at most")]
    public async Task A_frame_the_driver_never_writes_stops_the_interpreter_with_a_clear_error(string write, string expected)
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        CancellationToken limit = RunnerTestHelpers.Limit();

        ExecutionResult broken = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query,
            $"import os, struct\n{write}\nimport time\ntime.sleep(30)", limit);

        Assert.Equal(ExecutionStatus.Finished, broken.Status);
        Assert.NotEqual(0, broken.ExitCode);
        Assert.Contains("event channel (fd 4)", broken.Text("stderr"));
        Assert.Contains(expected, broken.Text("stderr"));
        Assert.Contains("its state is lost", broken.Text("stderr"));

        // The session goes on: the next run gets a fresh interpreter.
        ExecutionResult next = await host.Client.ExecuteToStatusAsync("r2", ExecutionMode.Query, "print(6 * 7)", limit);
        Assert.Equal(0, next.ExitCode);
        Assert.Equal("42\n", next.Text("stdout"));
    }

    private static long PeakRssKiB(int pid)
    {
        foreach (string line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);
            }
        }
        throw new InvalidOperationException($"no VmHWM for {pid}");
    }
}
