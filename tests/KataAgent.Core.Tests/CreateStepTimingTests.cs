using System.Diagnostics;
using KataAgent.Core.Sessions;

namespace KataAgent.Core.Tests;

/// <summary>
/// A create reports each step as it starts and, with its duration, as it ends (to a progress that takes both), and the
/// session keeps the durations. Only that the steps are there, in order, each ending before the next starts — never
/// how long they took.
/// </summary>
public abstract class CreateStepTimingTestsBase(AgentFixture fixture, string runtime)
{
    private Agent Agent => fixture.Agent;

    [Fact]
    public async Task Every_create_step_is_reported_with_its_duration_and_kept_on_the_session()
    {
        var progress = new RecordingProgress();
        var clock = Stopwatch.StartNew();
        var session = await Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime }, progress);
        var whole = clock.Elapsed;
        try
        {
            var expected = SessionCreator.StepNames;
            // Each step starts, then ends, before the next one starts.
            Assert.Equal(expected.SelectMany(step => new[] { "start " + step, "done " + step }), progress.Events);
            Assert.Equal(expected, session.CreateSteps.Select(t => t.Step));
            Assert.Equal(progress.Timings, session.CreateSteps);
            Assert.All(session.CreateSteps, t => Assert.True(t.Elapsed >= TimeSpan.Zero, $"{t.Step}: {t.Elapsed}"));
            // The steps ran one after another inside the create: together they cannot have taken longer than it.
            Assert.True(session.CreateSteps.Aggregate(TimeSpan.Zero, (sum, t) => sum + t.Elapsed) <= whole,
                string.Join(", ", session.CreateSteps) + " against " + whole);
            // The registered session is the one that carries them (what the API maps).
            Assert.Same(session.CreateSteps, Agent.GetSession(session.KernelId).CreateSteps);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    [Fact]
    public async Task A_plain_progress_still_gets_the_step_names_only()
    {
        var names = new List<string>();
        var session = await Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime }, new NamesOnly(names));
        try
        {
            Assert.Equal(SessionCreator.StepNames, names);
            Assert.Equal(SessionCreator.StepNames, session.CreateSteps.Select(t => t.Step));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    /// <summary>Synchronous (unlike Progress&lt;T&gt;), so the order seen is the order reported.</summary>
    private sealed class RecordingProgress : IProgress<string>, IProgress<CreateStepTiming>
    {
        public List<string> Events { get; } = [];
        public List<CreateStepTiming> Timings { get; } = [];

        public void Report(string value)
        {
            lock (Events)
                Events.Add("start " + value);
        }

        public void Report(CreateStepTiming value)
        {
            lock (Events)
            {
                Events.Add("done " + value.Step);
                Timings.Add(value);
            }
        }
    }

    private sealed class NamesOnly(List<string> into) : IProgress<string>
    {
        public void Report(string value) => into.Add(value);
    }
}

public sealed class RuncCreateStepTimingTests(RuncAgentFixture fixture)
    : CreateStepTimingTestsBase(fixture, "runc"), IClassFixture<RuncAgentFixture>;

public sealed class GvisorCreateStepTimingTests(GvisorAgentFixture fixture)
    : CreateStepTimingTestsBase(fixture, "gvisor"), IClassFixture<GvisorAgentFixture>;
