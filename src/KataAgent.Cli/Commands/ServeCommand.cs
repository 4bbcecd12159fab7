using System.CommandLine;
using System.Runtime.InteropServices;
using KataAgent.Api.Server;
using Microsoft.Extensions.Logging;
using CoreAgent = KataAgent.Core.Agent;

namespace KataAgent.Cli.Commands;

/// <summary>`kata-agent serve`: the agent plus its gRPC API until SIGTERM/SIGINT; sessions outlive it.</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var command = new Command("serve", """
            Run the agent and serve its gRPC API (kataagent.v1) on api.socket, and on api.tcp_listen with a bearer token if set.
            Stops on SIGTERM or Ctrl-C: no new calls, calls in flight finish, sessions keep running and are recovered on the next start.

            Examples:
              kata-agent serve
              kata-agent serve --config /etc/kata-agent/kata-agent.toml
              KATA_AGENT_API_TCP_LISTEN=127.0.0.1:7443 KATA_AGENT_API_TOKEN_FILE=/etc/kata-agent/token kata-agent serve
            """);
        command.SetAction(async (parse, ct) =>
        {
            var config = new GlobalSettings(parse).LoadConfig();
            using var loggerFactory = Logging.Create(config.Logging);
            var logger = loggerFactory.CreateLogger("kata-agent");
            // Signals end the serve loop, not the process: shutdown must run to completion.
            using var stop = new CancellationTokenSource();
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
            // The lock file names this serve's socket: a `run` that finds the data dir taken talks to it there.
            var options = config.Agent with { LockHolder = new("serve", Environment.ProcessId, config.Api.SocketPath) };
            await using var agent = await CoreAgent.StartAsync(options, loggerFactory, ct);
            // Only once the data dir is ours: a refused start is one error line, nothing else.
            logger.LogInformation("kata-agent {Version} started (config: {Config}, data dir: {DataDir})", AgentService.Version,
                config.SourcePath ?? "defaults", config.Agent.DataDir);
            if (agent.RuntimeClasses.FallbackWarning is { } warning)
                Output.Warn(warning);
            await using var server = await ApiServer.StartAsync(agent, config.Api, loggerFactory, ct);
            // Last: the manager may call at once, and everything it calls must be up.
            await using var cluster = config.BackendAi is { } backendAi
                ? await BackendAi.Hosting.BackendAiAgentHost.StartAsync(agent, backendAi, loggerFactory, stop.Token)
                : null;
            logger.LogInformation("ready: {Sessions} session(s) recovered; default runtime class {Class}", agent.Sessions.Count, agent.RuntimeClasses.DefaultClass);
            try
            {
                await Task.Delay(Timeout.Infinite, CancellationTokenSource.CreateLinkedTokenSource(stop.Token, ct).Token);
            }
            catch (OperationCanceledException)
            {
            }
            if (cluster is not null)
                await cluster.DisposeAsync(); // agent_terminated before the API goes
            await server.StopAsync(CancellationToken.None);
            logger.LogInformation("stopped; {Sessions} session(s) left running", agent.Sessions.Count);
            return 0;
        });
        return command;
    }
}
