using System.Text;
using NetMQ;
using NetMQ.Sockets;

namespace KataAgent.Runner.Protocol.Tests;

/// <summary>The runner's two sockets on 127.0.0.1 random ports, driven by the test (no real runner).</summary>
internal sealed class FakeRunner : IDisposable
{
    private readonly PullSocket _pull = new();
    private readonly PushSocket _push = new();

    /// <param name="curve">The runner's key pair: both sockets are CURVE servers, as in the real runner.</param>
    public FakeRunner(NetMQCertificate? curve = null)
    {
        _pull.Options.Linger = TimeSpan.Zero;
        _push.Options.Linger = TimeSpan.Zero;
        if (curve is not null)
        {
            foreach (NetMQSocket socket in new NetMQSocket[] { _pull, _push })
            {
                socket.Options.CurveServer = true;
                socket.Options.CurveCertificate = curve;
            }
        }
        InputPort = _pull.BindRandomPort("tcp://127.0.0.1");
        OutputPort = _push.BindRandomPort("tcp://127.0.0.1");
    }

    public int InputPort { get; }
    public int OutputPort { get; }

    public KernelRunnerClient Connect(long maxBufferedCharacters = 8L * 1024 * 1024, long maxMessageSize = KernelRunnerClientOptions.DefaultMaxMessageSize,
        int maxQueuedRuns = 16, TimeSpan? uncollectedEndGrace = null) =>
        new(new KernelRunnerClientOptions
        {
            InputPort = InputPort, OutputPort = OutputPort, MaxBufferedCharacters = maxBufferedCharacters, MaxMessageSize = maxMessageSize,
            MaxQueuedRuns = maxQueuedRuns, UncollectedEndGrace = uncollectedEndGrace ?? TimeSpan.FromSeconds(30),
        });

    /// <summary>Next message from the client as (type, payload text).</summary>
    public (string Type, string Payload) Receive()
    {
        NetMQMessage? message = new();
        Assert.True(_pull.TryReceiveMultipartMessage(TimeSpan.FromSeconds(60), ref message), "the client sent nothing");
        Assert.Equal(2, message.FrameCount);
        return (message![0].ConvertToString(Encoding.ASCII), message[1].ConvertToString(Encoding.UTF8));
    }

    /// <summary>Whether any message from the client arrives within <paramref name="wait"/>.</summary>
    public bool TryReceive(TimeSpan wait)
    {
        NetMQMessage? message = new();
        return _pull.TryReceiveMultipartMessage(wait, ref message);
    }

    public void Send(string type, string payload) => Send(type, Encoding.UTF8.GetBytes(payload));

    public void Send(string type, byte[] payload) => SendFrames([Encoding.ASCII.GetBytes(type), payload]);

    public void SendFrames(params byte[][] frames)
    {
        var message = new NetMQMessage();
        foreach (byte[] frame in frames)
        {
            message.Append(frame);
        }
        Assert.True(_push.TrySendMultipartMessage(TimeSpan.FromSeconds(60), message), "no client connected");
    }

    public void Dispose()
    {
        _pull.Dispose();
        _push.Dispose();
    }
}
