using System.Text;
using System.Text.Json;
using KataAgent.Runner.Protocol;
using NetMQ;
using NetMQ.Sockets;

namespace KataAgent.Runner.Tests;

/// <summary>
/// runner.json sequencedOutput: run output carries {seq, run}, is kept in a bounded replay buffer, and can be asked
/// for again (`replay`), also by a client that was not there when the run started.
/// </summary>
[Collection(RunnerCollection.Name)]
public sealed class SequencedOutputTests(PublishedRunner runner)
{
    [Fact]
    public async Task Run_output_is_numbered_without_gap_and_a_replay_from_the_middle_resends_exactly_the_rest()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, sequenced: true);
        host.Client.Dispose();
        using var peer = new SequencedPeer(host);
        CancellationToken limit = RunnerTestHelpers.Limit();

        peer.Send("run-label", "first-run");
        peer.Send("code", "import sys\nfor i in range(40):\n    print('line', i, flush=True)\n_ = sys.stderr.write('done\\n')");
        List<Received> run = await peer.ReceiveUntilAsync(message => message.Type == "finished", limit);

        Assert.All(run, message => Assert.NotNull(message.Seq));
        long firstSeq = run[0].Seq!.Value;
        Assert.Equal(Enumerable.Range(0, run.Count).Select(offset => firstSeq + offset), run.Select(message => message.Seq!.Value));
        Assert.Single(run.Select(message => message.Run).Distinct());
        Assert.Equal(string.Concat(Enumerable.Range(0, 40).Select(i => $"line {i}\n")),
            string.Concat(run.Where(message => message.Type == "stdout").Select(message => message.Payload)));

        JsonElement runs = await peer.RequestAsync("runs", "", "runs-result", limit);
        JsonElement record = runs.GetProperty("runs").EnumerateArray().Single();
        Assert.Equal("first-run", record.GetProperty("label").GetString());
        Assert.Equal("ended", record.GetProperty("state").GetString());
        Assert.Equal(firstSeq, record.GetProperty("firstSeq").GetInt64());
        Assert.Equal(run[^1].Seq, record.GetProperty("lastSeq").GetInt64());
        Assert.Equal(run[^1].Seq + 1, runs.GetProperty("nextSeq").GetInt64());

        int middle = run.Count / 2;
        peer.Send("replay", $"{{\"from\": {run[middle].Seq}}}");
        List<Received> replayed = await peer.ReceiveUntilAsync(message => message.Type == "finished", limit);
        Assert.Equal(run.Skip(middle).Select(message => (message.Seq, message.Run, message.Type, message.Payload)),
            replayed.Select(message => (message.Seq, message.Run, message.Type, message.Payload)));
    }

    [Fact]
    public async Task A_replay_of_what_the_bounded_buffer_evicted_says_so_and_still_holds_the_run_end()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, sequenced: true, replayBufferBytes: 64 * 1024);
        host.Client.Dispose();
        using var peer = new SequencedPeer(host);
        CancellationToken limit = RunnerTestHelpers.Limit();

        // ~200 KiB of output, one message per line: far over the 64 KiB buffer.
        peer.Send("code", "for i in range(200):\n    print(str(i).rjust(1000, '.'), flush=True)");
        List<Received> run = await peer.ReceiveUntilAsync(message => message.Type == "finished", limit);
        long firstSeq = run[0].Seq!.Value;
        long lastSeq = run[^1].Seq!.Value;

        peer.Send("replay", $"{{\"from\": {firstSeq}}}");
        List<Received> replayed = await peer.ReceiveUntilAsync(message => message.Type == "finished", limit);

        Received gap = replayed[0];
        Assert.Equal("replay-gap", gap.Type);
        using JsonDocument range = JsonDocument.Parse(gap.Payload);
        long gapFrom = range.RootElement.GetProperty("from").GetInt64();
        long gapTo = range.RootElement.GetProperty("to").GetInt64();
        Assert.Equal(firstSeq, gapFrom);
        Assert.True(gapTo > firstSeq && gapTo < lastSeq, $"gap {gapFrom}..{gapTo} of {firstSeq}..{lastSeq}");
        // After the gap: the newest messages, consecutive, then the end; at most the buffer's bytes of them.
        List<Received> kept = replayed.Skip(1).ToList();
        Assert.Equal(Enumerable.Range(0, kept.Count).Select(offset => gapTo + 1 + offset), kept.Select(message => message.Seq!.Value));
        Assert.Equal(lastSeq, kept[^1].Seq);
        Assert.InRange(kept.Sum(message => Encoding.UTF8.GetByteCount(message.Payload)), 1, 64 * 1024);
        JsonElement runs = await peer.RequestAsync("runs", "", "runs-result", limit);
        Assert.Equal(gapTo + 1, runs.GetProperty("oldestSeq").GetInt64());
    }

    [Fact]
    public async Task A_new_client_resumes_the_run_a_disposed_client_left_and_gets_all_of_it_in_order()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner, sequenced: true);
        CancellationToken limit = RunnerTestHelpers.Limit();
        const int Count = 60;
        string expected = string.Concat(Enumerable.Range(0, Count).Select(i => $"count {i}\n"));

        // ~3 s of output; the first client collects some of it, then goes away mid-run.
        ExecutionResult early = await host.Client.ExecuteAsync("counter", ExecutionMode.Query,
            $"import time\nfor i in range({Count}):\n    print('count', i, flush=True)\n    time.sleep(0.05)",
            new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(1) }, limit);
        Assert.Equal(ExecutionStatus.Continued, early.Status);
        Assert.StartsWith("count 0\n", early.Text("stdout"), StringComparison.Ordinal);

        KernelRunnerClient second = host.ReplaceClient();
        AdoptedRun? adopted = await second.ResumeAsync(cancellationToken: limit);

        Assert.NotNull(adopted);
        Assert.Equal("counter", adopted.RunId);
        ExecutionResult whole = await second.ExecuteToStatusAsync("counter", ExecutionMode.Continue, "", limit);
        Assert.True(whole.Status == ExecutionStatus.Finished && whole.ExitCode == 0, whole.Describe());
        Assert.Equal(expected, whole.Text("stdout"));

        ExecutionResult after = await second.ExecuteToStatusAsync("next", ExecutionMode.Query, "print('after')", limit);
        Assert.True(after.Text("stdout") == "after\n", after.Describe());
    }

    [Fact]
    public async Task A_runner_without_sequencedOutput_speaks_plain_two_frames()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        host.Client.Dispose();
        using var peer = new SequencedPeer(host);
        CancellationToken limit = RunnerTestHelpers.Limit();

        peer.Send("run-label", "ignored");
        peer.Send("code", "print('plain')");
        List<Received> run = await peer.ReceiveUntilAsync(message => message.Type == "finished", limit);

        Assert.All(run, message => Assert.Null(message.Seq));
        // print() may reach the pipe as "plain" and "\n": two messages.
        Assert.Equal("plain\n", string.Concat(run.Where(message => message.Type == "stdout").Select(message => message.Payload)));
    }

    [Fact]
    public async Task A_client_asking_for_sequenced_output_from_a_runner_that_does_not_number_it_runs_plain()
    {
        // As an older kata-runner (which ignores the runner.json switch) is to an agent that asks for sequencing.
        await using RunnerHost host = await RunnerHost.StartAsync(runner, sequenced: false, clientSequenced: true);
        CancellationToken limit = RunnerTestHelpers.Limit();

        IReadOnlyDictionary<string, object?> status = await host.Client.GetStatusAsync(limit);
        Assert.Equal(false, status["sequenced-output"]);
        Assert.False(host.Client.IsSequenced);
        ExecutionResult run = await host.Client.ExecuteToStatusAsync("r1", ExecutionMode.Query, "print(6 * 7)", limit);
        Assert.True(run.Status == ExecutionStatus.Finished && run.Text("stdout") == "42\n", run.Describe());

        // A client that never asked for the status learns it before its first run instead of waiting for `runs`.
        KernelRunnerClient fresh = host.ReplaceClient();
        ExecutionResult again = await fresh.ExecuteToStatusAsync("r2", ExecutionMode.Query, "print('again')", limit);
        Assert.True(again.Status == ExecutionStatus.Finished && again.Text("stdout") == "again\n", again.Describe());
        Assert.False(fresh.IsSequenced);
        await Assert.ThrowsAsync<InvalidOperationException>(() => fresh.ListRunnerRunsAsync(limit));
    }

    private sealed record Received(string Type, string Payload, long? Seq, long? Run);

    /// <summary>A raw agent-side peer (NULL mechanism) that keeps the third frame.</summary>
    private sealed class SequencedPeer : IDisposable
    {
        private readonly PushSocket _push = new();
        private readonly PullSocket _pull = new();

        public SequencedPeer(RunnerHost host)
        {
            foreach (NetMQSocket socket in new NetMQSocket[] { _push, _pull })
            {
                socket.Options.Linger = TimeSpan.Zero;
            }
            _pull.Connect($"tcp://127.0.0.1:{host.OutputPort}");
            _push.Connect($"tcp://127.0.0.1:{host.InputPort}");
        }

        public void Send(string type, string payload)
        {
            var message = new NetMQMessage(2);
            message.Append(Encoding.ASCII.GetBytes(type));
            message.Append(Encoding.UTF8.GetBytes(payload));
            Assert.True(_push.TrySendMultipartMessage(TimeSpan.FromSeconds(10), message), $"cannot send {type}");
        }

        public async Task<JsonElement> RequestAsync(string type, string payload, string replyType, CancellationToken cancellationToken)
        {
            Send(type, payload);
            List<Received> received = await ReceiveUntilAsync(message => message.Type == replyType, cancellationToken);
            using JsonDocument document = JsonDocument.Parse(received[^1].Payload);
            return document.RootElement.Clone();
        }

        /// <summary>Every message (replies skipped only if they are status) up to and including the first that matches.</summary>
        public Task<List<Received>> ReceiveUntilAsync(Func<Received, bool> last, CancellationToken cancellationToken) => Task.Run(() =>
        {
            var received = new List<Received>();
            var message = new NetMQMessage();
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (!_pull.TryReceiveMultipartMessage(TimeSpan.FromMilliseconds(200), ref message))
                {
                    continue;
                }
                long? seq = null, run = null;
                if (message.FrameCount == 3)
                {
                    using JsonDocument header = JsonDocument.Parse(message[2].ToByteArray());
                    seq = header.RootElement.GetProperty("seq").GetInt64();
                    run = header.RootElement.GetProperty("run").GetInt64();
                }
                var item = new Received(message[0].ConvertToString(Encoding.ASCII), Encoding.UTF8.GetString(message[1].ToByteArray()), seq, run);
                received.Add(item);
                if (last(item))
                {
                    return received;
                }
            }
        }, cancellationToken);

        public void Dispose()
        {
            _push.Dispose();
            _pull.Dispose();
        }
    }
}
