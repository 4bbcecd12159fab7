using KataAgent.Testing;

namespace KataAgent.Core.Tests;

public sealed class SoakAgentFixture : AgentFixture;

/// <summary>A short soak in CI (the long one and the chaos run live in bench/): the census must be all zero.</summary>
public sealed class SoakTests(SoakAgentFixture fixture) : IClassFixture<SoakAgentFixture>
{
    [Fact]
    public async Task Thirty_cycles_leave_nothing_behind()
    {
        var cycles = int.TryParse(Environment.GetEnvironmentVariable("KATA_AGENT_SOAK_CYCLES"), out var n) ? n : 30;
        var report = await Soak.RunAsync(fixture.Agent, fixture.ImageName, ["runc", "gvisor"], cycles);
        Assert.True(report.Failures == 0, string.Join("\n", report.Errors));
        Assert.True(report.Census.IsClean, report.Census.ToString());
    }
}
