using System.Globalization;
using System.Text;
using KataAgent.Core.Sessions;
using KataAgent.Runner.Protocol;
using KataAgent.Testing;
using Xunit.Abstractions;

namespace KataAgent.Core.Tests;

public sealed class LogCapRuncFixture : AgentFixture;
public sealed class LogCapGvisorFixture : AgentFixture;

/// <summary>
/// The container log's cap holds as the log is written: user code floods PID 1's stderr (the container's own stdio,
/// which the shim writes into the session's log FIFO) for 10 s while the test samples the log file's size.
/// </summary>
public abstract class SessionLogCapTestsBase(AgentFixture fixture, string runtime, ITestOutputHelper output)
{
    protected Agent Agent => fixture.Agent;

    protected Task<Session> CreateAsync() =>
        Agent.CreateSessionAsync(new SessionRequest { Image = fixture.ImageName, RuntimeClass = runtime });

    protected async Task<string> RunAsync(string kernelId, string code)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        await foreach (var e in Agent.ExecuteAsync(kernelId, "r" + Guid.NewGuid().ToString("N")[..6], ExecutionMode.Query, code,
            new ExecutionOptions { FlushTimeout = TimeSpan.FromSeconds(30) }, timeout.Token))
        {
            if (e is OutputEvent o)
                (o.Item.Kind == "stdout" ? stdout : stderr).Append(o.Item.Data);
        }
        Assert.True(!stderr.ToString().Contains("Traceback", StringComparison.Ordinal), $"the session's code failed:\n{stderr}");
        return stdout.ToString().Trim();
    }

    /// <summary>Floods /proc/1/fd/2 for the given seconds, ends with a marker line; prints the bytes written.</summary>
    protected static string FloodCode(int seconds, string end) => $$"""
        import os, time
        fd = os.open('/proc/1/fd/2', os.O_WRONLY)
        block = b'x' * 65535 + b'\n'
        total, deadline = 0, time.time() + {{seconds}}
        while time.time() < deadline:
            total += os.write(fd, block)
        total += os.write(fd, b'{{end}}\n')
        os.close(fd)
        print(total)
        """;

    /// <summary>Runs the flood while sampling the log's size; returns (bytes written, largest size seen, samples).</summary>
    protected async Task<(long Written, long MaxSize, int Samples)> FloodAndSampleAsync(Session session, int seconds, string end)
    {
        var path = session.Record.LogPath;
        using var done = new CancellationTokenSource();
        long max = 0;
        var samples = 0;
        var sampler = Task.Run(async () =>
        {
            while (!done.IsCancellationRequested)
            {
                try
                {
                    max = Math.Max(max, new FileInfo(path).Length);
                    samples++;
                }
                catch (FileNotFoundException)
                {
                }
                await Task.Delay(5, CancellationToken.None);
            }
        });
        var written = long.Parse(await RunAsync(session.KernelId, FloodCode(seconds, end)), CultureInfo.InvariantCulture);
        await done.CancelAsync();
        await sampler;
        max = Math.Max(max, new FileInfo(path).Length);
        return (written, max, samples);
    }

    /// <summary>The session's log once it holds <paramref name="line"/>; fails naming the line after 60 s.</summary>
    protected static Task<string> LogOnceItHoldsAsync(Session session, string line) =>
        Eventually.WaitAsync(() => File.ReadAllTextAsync(session.Record.LogPath), log => log.Contains(line, StringComparison.Ordinal),
            $"the session log to hold the flood's last line {line}", TimeSpan.FromSeconds(60));

    [Fact]
    public async Task Flooding_PID_1s_stderr_for_10_s_never_takes_the_log_past_its_cap()
    {
        var cap = fixture.Options.SessionLogMaxBytes;
        var session = await CreateAsync();
        try
        {
            var (written, max, samples) = await FloodAndSampleAsync(session, 10, "END-OF-FLOOD");
            output.WriteLine($"{runtime}: wrote {written >> 20} MiB to /proc/1/fd/2 in 10 s; log size at most {max} bytes over {samples} samples (cap {cap})");
            Assert.True(written > 3 * cap, $"the flood wrote only {written} bytes: the cap was not exercised");
            Assert.InRange(max, 1, cap);
            // The newest output is what stays, behind the marker of the cut. The shim relays PID 1's stdio on its own
            // time (gVisor through one more hop), so the last line may reach the log a little after the run ends.
            var log = await LogOnceItHoldsAsync(session, "END-OF-FLOOD");
            Assert.Contains("[kata-agent: log cut", log, StringComparison.Ordinal);
            Assert.InRange(new FileInfo(session.Record.LogPath).Length, 1, cap);
            // The session is still usable.
            Assert.Equal("2", await RunAsync(session.KernelId, "print(1 + 1)"));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(census.IsClean, census.ToString());
    }
}

public sealed class RuncSessionLogCapTests(LogCapRuncFixture fixture, ITestOutputHelper output)
    : SessionLogCapTestsBase(fixture, "runc", output), IClassFixture<LogCapRuncFixture>
{
    [Fact]
    public async Task The_cap_holds_after_an_agent_restart()
    {
        var cap = fixture.Options.SessionLogMaxBytes;
        var session = await CreateAsync();
        try
        {
            await fixture.RestartAgentAsync();
            var recovered = Agent.GetSession(session.KernelId);
            var (written, max, _) = await FloodAndSampleAsync(recovered, 5, "AFTER-RESTART");
            Assert.True(written > 2 * cap, $"the flood wrote only {written} bytes");
            Assert.InRange(max, 1, cap);
            await LogOnceItHoldsAsync(recovered, "AFTER-RESTART");
            Assert.InRange(new FileInfo(recovered.Record.LogPath).Length, 1, cap);
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
        var census = await AgentLeakCensus.TakeAsync(Agent);
        Assert.True(census.IsClean, census.ToString());
    }
}

public sealed class GvisorSessionLogCapTests(LogCapGvisorFixture fixture, ITestOutputHelper output)
    : SessionLogCapTestsBase(fixture, "gvisor", output), IClassFixture<LogCapGvisorFixture>;
