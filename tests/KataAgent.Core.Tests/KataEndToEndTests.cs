using KataAgent.Core.Runtime;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;

namespace KataAgent.Core.Tests;

/// <summary>A real Kata session; skipped, naming what is missing, on hosts that cannot run Kata.</summary>
public sealed class KataEndToEndTests(RuncAgentFixture fixture) : IClassFixture<RuncAgentFixture>
{
    [SkippableFact]
    public async Task A_session_runs_code_in_its_own_vm_kernel()
    {
        var missing = RuntimeClassTable.Get("kata").HostChecks(new AgentOptions()).Where(c => !c.Ok).Select(c => $"{c.Name}: {c.Detail}").ToList();
        Skip.If(missing.Count > 0, "needs a Kata host; missing: " + string.Join("; ", missing));

        var session = await fixture.Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = "kata" });
        try
        {
            var output = "";
            await foreach (var e in fixture.Agent.ExecuteAsync(session.KernelId, "kata-1", ExecutionMode.Query, "import platform; print(platform.release())"))
            {
                if (e is OutputEvent { Item.Kind: "stdout" } o)
                    output += o.Item.Data;
            }
            Assert.NotEqual(File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), output.Trim());
        }
        finally
        {
            await fixture.Agent.DestroySessionAsync(session.KernelId);
        }
    }
}
