using System.Threading.Channels;
using Grpc.Core;

namespace KataAgent.Api.Server;

/// <summary>
/// Reports progress lines on a server stream. <see cref="IProgress{T}.Report"/> is synchronous and may be called
/// from any thread, while a gRPC stream takes one write at a time: lines go through a queue and one pump writes them.
/// </summary>
internal sealed class StreamProgress<T>(IServerStreamWriter<T> stream, Func<string, T> wrap) : StreamProgress<T, string>(stream, wrap);

/// <inheritdoc cref="StreamProgress{T}"/>
internal class StreamProgress<T, TItem> : IProgress<TItem>
{
    private readonly Channel<TItem> _lines = Channel.CreateUnbounded<TItem>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _pump;

    public StreamProgress(IServerStreamWriter<T> stream, Func<TItem, T> wrap)
    {
        _pump = Task.Run(async () =>
        {
            await foreach (var line in _lines.Reader.ReadAllAsync())
            {
                try
                {
                    await stream.WriteAsync(wrap(line));
                }
                catch (InvalidOperationException)
                {
                    return; // the call ended; progress is best effort
                }
            }
        });
    }

    public void Report(TItem value) => _lines.Writer.TryWrite(value);

    /// <summary>Waits until every reported line is written; call before writing anything else on the stream.</summary>
    public Task FlushAsync()
    {
        _lines.Writer.TryComplete();
        return _pump;
    }
}
