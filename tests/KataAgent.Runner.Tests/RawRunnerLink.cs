using System.Text;
using System.Text.Json;
using NetMQ;
using NetMQ.Sockets;

namespace KataAgent.Runner.Tests;

/// <summary>
/// The agent's side of the protocol with nothing in between: sends any payload (e.g. Backend.AI's
/// command-less start-service) and waits for a reply type. It takes over from the host's client,
/// which it disposes: the runner's PUSH deals its messages round-robin over every connected peer.
/// </summary>
public sealed class RawRunnerLink : IDisposable
{
    private readonly PushSocket _push = new();
    private readonly PullSocket _pull = new();

    private RawRunnerLink(RunnerHost host)
    {
        foreach (NetMQSocket socket in new NetMQSocket[] { _push, _pull })
        {
            socket.Options.Linger = TimeSpan.Zero;
        }
        _pull.Connect($"tcp://127.0.0.1:{host.OutputPort}");
        _push.Connect($"tcp://127.0.0.1:{host.InputPort}");
    }

    /// <summary>Connects, and returns once status replies reliably reach this link (the old client is gone).</summary>
    public static async Task<RawRunnerLink> TakeOverAsync(RunnerHost host, CancellationToken cancellationToken)
    {
        host.Client.Dispose();
        var link = new RawRunnerLink(host);
        int answeredInARow = 0;
        while (answeredInARow < 3)
        {
            cancellationToken.ThrowIfCancellationRequested();
            link.Send("status", "");
            answeredInARow = await link.TryReceiveAsync("status", TimeSpan.FromSeconds(2)) is null ? 0 : answeredInARow + 1;
        }
        return link;
    }

    public void Send(string type, string payload)
    {
        var message = new NetMQMessage(2);
        message.Append(Encoding.ASCII.GetBytes(type));
        message.Append(Encoding.UTF8.GetBytes(payload));
        if (!_push.TrySendMultipartMessage(TimeSpan.FromSeconds(10), message))
        {
            throw new TimeoutException($"cannot send {type} to the runner");
        }
    }

    /// <summary>Sends a request and returns the JSON payload of the first reply of <paramref name="replyType"/>.</summary>
    public async Task<JsonElement> RequestAsync(string type, string payload, string replyType, TimeSpan timeout)
    {
        Send(type, payload);
        string answer = await TryReceiveAsync(replyType, timeout)
            ?? throw new TimeoutException($"no {replyType} answer to {type} {payload} within {timeout.TotalSeconds:0} s");
        using JsonDocument document = JsonDocument.Parse(answer);
        return document.RootElement.Clone();
    }

    /// <summary>start-service with the given request object; the service-result.</summary>
    public Task<JsonElement> StartServiceAsync(object request, int timeoutSeconds = 90) =>
        RequestAsync("start-service", JsonSerializer.Serialize(request), "service-result", TimeSpan.FromSeconds(timeoutSeconds));

    public Task<JsonElement> GetAppsAsync(string filter) =>
        RequestAsync("get-apps", filter, "apps-result", TimeSpan.FromSeconds(30));

    /// <summary>The payload text of the next message of <paramref name="type"/> (others are skipped), or null after <paramref name="timeout"/>.</summary>
    private Task<string?> TryReceiveAsync(string type, TimeSpan timeout) => Task.Run(() =>
    {
        DateTime end = DateTime.UtcNow + timeout;
        var message = new NetMQMessage();
        while (DateTime.UtcNow < end)
        {
            if (_pull.TryReceiveMultipartMessage(TimeSpan.FromMilliseconds(200), ref message) && message.FrameCount == 2
                && message[0].ConvertToString(Encoding.ASCII) == type)
            {
                return message[1].ConvertToString(Encoding.UTF8);
            }
        }
        return (string?)null;
    });

    public void Dispose()
    {
        _push.Dispose();
        _pull.Dispose();
    }
}
