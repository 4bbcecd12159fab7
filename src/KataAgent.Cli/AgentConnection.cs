using KataAgent.Api.Client;
using KataAgent.Api.Server;
using KataAgent.Core.Locking;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using CoreAgent = KataAgent.Core.Agent;

namespace KataAgent.Cli;

/// <summary>
/// The CLI's way to an agent: a running `serve` (its unix socket, or --address over TCP), or — for `run` only —
/// an agent started in this process and served on a private socket, so every command speaks the same API.
/// </summary>
internal sealed class AgentConnection : IAsyncDisposable
{
    private readonly CoreAgent? _agent;
    private readonly ApiServer? _server;
    private readonly ILoggerFactory? _loggerFactory;

    private AgentConnection(ApiClient client, CoreAgent? agent = null, ApiServer? server = null, ILoggerFactory? loggerFactory = null)
    {
        Client = client;
        _agent = agent;
        _server = server;
        _loggerFactory = loggerFactory;
    }

    public ApiClient Client { get; }
    public bool InProcess => _agent is not null;

    public static string NoServeMessage(string socket) =>
        $"no kata-agent serve is listening on {socket}: start one with 'kata-agent serve' (as root), or pass --socket/--address of a running one";

    public static async Task<AgentConnection> ConnectAsync(GlobalSettings settings, bool allowInProcess, CancellationToken cancellationToken)
    {
        var config = settings.LoadConfig();
        if (settings.Address is { } address)
        {
            if (!Uri.TryCreate(address, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
                throw new CliException($"--address: '{address}' is not http://host:port or https://host:port", 2);
            return new AgentConnection(ApiClient.ForTcp(uri, config.Api.Token));
        }
        var socket = config.Api.SocketPath;
        if (await ApiClient.IsListeningAsync(socket, cancellationToken))
            return new AgentConnection(ApiClient.ForUnixSocket(socket));
        if (!allowInProcess)
            throw new CliException(NoServeMessage(socket));

        // No serve: run an agent here (it starts its own containerd unless one is configured). One agent per data dir:
        // while another `run` holds it, wait for it to finish; a serve found through the lock file is used instead.
        var loggerFactory = settings.Verbose ? Logging.Create(config.Logging) : NullLoggerFactory.Instance;
        var options = config.Agent with { LockHolder = new DataDirLockHolder("run", Environment.ProcessId, null) };
        var waiting = false;
        var unnamed = 0;
        while (true)
        {
            CoreAgent? agent = null;
            try
            {
                agent = await Output.WithStatusAsync(waiting ? "starting the agent" : "starting the agent (no kata-agent serve is running)",
                    _ => CoreAgent.StartAsync(options, loggerFactory, cancellationToken));
                var privateSocket = Path.Combine(Path.GetTempPath(), $"kata-agent-run-{Environment.ProcessId}-{Guid.NewGuid():N}"[..40] + ".sock");
                var server = await ApiServer.StartAsync(agent, new ApiServerOptions { SocketPath = privateSocket, ShutdownTimeout = TimeSpan.FromSeconds(5) },
                    loggerFactory, cancellationToken);
                return new AgentConnection(ApiClient.ForUnixSocket(privateSocket), agent, server, loggerFactory);
            }
            catch (DataDirLockedException locked)
            {
                if (locked.Holder?.Socket is { Length: > 0 } holderSocket && await ApiClient.IsListeningAsync(holderSocket, cancellationToken))
                    return new AgentConnection(ApiClient.ForUnixSocket(holderSocket));
                // The holder writes its name right after taking the lock: give it a moment before saying "another".
                if (!waiting && locked.Holder is null && ++unnamed < 5)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(50), cancellationToken);
                    continue;
                }
                if (!waiting)
                {
                    Output.Info($"waiting for {locked.Holder?.ToString() ?? "another kata-agent"} to finish with {config.Agent.DataDir} " +
                        "(runs without a serve take turns; 'kata-agent serve' runs them side by side)");
                    waiting = true;
                }
                await Task.Delay(TimeSpan.FromMilliseconds(200), cancellationToken);
                // A serve may have started meanwhile.
                if (await ApiClient.IsListeningAsync(socket, cancellationToken))
                    return new AgentConnection(ApiClient.ForUnixSocket(socket));
            }
            catch
            {
                if (agent is not null)
                    await agent.DisposeAsync();
                loggerFactory.Dispose();
                throw;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        if (_server is not null)
            await _server.DisposeAsync();
        if (_agent is not null)
            await _agent.DisposeAsync();
        _loggerFactory?.Dispose();
    }
}
