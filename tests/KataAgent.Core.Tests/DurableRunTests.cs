using System.Text;
using KataAgent.Core.Runs;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;

namespace KataAgent.Core.Tests;

public sealed class RuncDurableRunFixture : AgentFixture;
public sealed class GvisorDurableRunFixture : AgentFixture;

/// <summary>
/// Durable runs on live sessions: a run outlives the caller that started it, an attach from any sequence number gets
/// the rest of it then follows live, and a run survives an agent restart (the runner replays it to the new agent).
/// </summary>
public abstract class DurableRunTestsBase(AgentFixture fixture, string runtime)
{
    private const int Count = 100;

    // 10 s of output: one line every 0.1 s.
    private static readonly string CounterCode = $"import time\nfor i in range({Count}):\n    print('count', i, flush=True)\n    time.sleep(0.1)";

    private static readonly string Expected = string.Concat(Enumerable.Range(0, Count).Select(i => $"count {i}\n"));

    private Task<Session> CreateAsync() =>
        fixture.Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime });

    /// <summary>Starts the run and reads it for <paramref name="readFor"/>, then goes away as a disconnecting client does.</summary>
    private async Task<string> StartAndDisconnectAsync(string kernelId, string runId, TimeSpan readFor)
    {
        var seen = new StringBuilder();
        using var disconnect = new CancellationTokenSource(readFor);
        try
        {
            await foreach (var e in fixture.Agent.ExecuteAsync(kernelId, runId, ExecutionMode.Query, CounterCode,
                               new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(60) }, disconnect.Token))
            {
                if (e is OutputEvent { Item.Kind: "stdout" } o)
                    seen.Append(o.Item.Data);
            }
            Assert.Fail("the run ended before the client went away");
        }
        catch (OperationCanceledException) when (disconnect.IsCancellationRequested)
        {
        }
        return seen.ToString();
    }

    private static async Task<List<RunLogEntry>> AttachToEndAsync(Agent agent, string kernelId, string? runId, long from)
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var entries = new List<RunLogEntry>();
        await foreach (var entry in agent.AttachRunAsync(kernelId, runId, from, limit.Token))
            entries.Add(entry);
        return entries;
    }

    private static string Stdout(IEnumerable<RunLogEntry> entries) =>
        string.Concat(entries.Select(entry => entry.Event).OfType<OutputEvent>().Where(o => o.Item.Kind == "stdout").Select(o => o.Item.Data));

    private static void AssertWholeRun(List<RunLogEntry> entries, long from)
    {
        // No gap, no duplicate: consecutive numbers from where the attach started.
        Assert.Equal(Enumerable.Range(0, entries.Count).Select(offset => from + offset), entries.Select(entry => entry.Seq));
        var end = Assert.IsType<ResultEvent>(entries[^1].Event);
        Assert.True(end.Result.Status == ExecutionStatus.Finished && end.Result.ExitCode == 0, end.Result.ToJson());
    }

    [Fact]
    public async Task A_counter_run_outlives_the_client_that_went_away_and_attaches_from_0_and_from_the_middle_get_it_whole()
    {
        var session = await CreateAsync();
        try
        {
            var early = await StartAndDisconnectAsync(session.KernelId, "counter", TimeSpan.FromSeconds(2));
            Assert.StartsWith("count 0\n", early, StringComparison.Ordinal);
            Assert.Contains(fixture.Agent.ListRuns(session.KernelId), run => run.RunId == "counter" && run.State == RunSummary.Running);

            // Without a run id: the run still going.
            var whole = await AttachToEndAsync(fixture.Agent, session.KernelId, null, 0);
            AssertWholeRun(whole, 0);
            Assert.Equal(Expected, Stdout(whole));

            var middle = whole[whole.Count / 2].Seq;
            var tail = await AttachToEndAsync(fixture.Agent, session.KernelId, "counter", middle);
            AssertWholeRun(tail, middle);
            Assert.Equal(whole.Skip(whole.Count / 2).Select(entry => entry.Event), tail.Select(entry => entry.Event));

            // The ended run's result stays fetchable.
            var summary = Assert.Single(fixture.Agent.ListRuns(session.KernelId), run => run.RunId == "counter");
            Assert.Equal(RunSummary.Ended, summary.State);
            Assert.Equal(0, summary.Result?.ExitCode);

            // The session serves the next run as usual.
            var next = await RunEvents.CollectAsync(fixture.Agent.ExecuteAsync(session.KernelId, "next", ExecutionMode.Query, "print('next')"));
            Assert.Equal("next\n", RunEvents.Out(next));
        }
        finally
        {
            await fixture.Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_run_survives_an_agent_restart_and_an_attach_gets_all_of_its_output_in_order()
    {
        var session = await CreateAsync();
        try
        {
            _ = await StartAndDisconnectAsync(session.KernelId, "survivor", TimeSpan.FromSeconds(2));

            await fixture.RestartAgentAsync();
            var agent = fixture.Agent;
            // The new agent adopts the run the runner still holds (in the background, after recovery).
            await Eventually.WaitAsync(() => agent.ListRuns(session.KernelId).Any(run => run.RunId == "survivor"),
                "the restarted agent to adopt the run", timeout: TimeSpan.FromSeconds(60));

            var whole = await AttachToEndAsync(agent, session.KernelId, "survivor", 0);
            AssertWholeRun(whole, 0);
            Assert.Equal(Expected, Stdout(whole));
        }
        finally
        {
            await fixture.Agent.DestroySessionAsync(session.KernelId);
        }
    }
}

public sealed class RuncDurableRunTests(RuncDurableRunFixture fixture)
    : DurableRunTestsBase(fixture, "runc"), IClassFixture<RuncDurableRunFixture>;

public sealed class GvisorDurableRunTests(GvisorDurableRunFixture fixture)
    : DurableRunTestsBase(fixture, "gvisor"), IClassFixture<GvisorDurableRunFixture>;
