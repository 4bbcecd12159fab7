using System.Net.Sockets;
using System.Text;
using KataAgent.Runner.Transport;

namespace KataAgent.Runner.Execution;

/// <summary>
/// Batch-mode input(), Backend.AI's way: the runner listens on a unix socket (/tmp/bai-user-input.sock);
/// a batch program that wants a line connects, the runner sends <c>waiting-input</c> with an empty payload,
/// and the text of the next <c>input</c> message is written back on that connection, which is then closed.
/// Our sitecustomize.py (and Backend.AI images' own) make Python's input() do this when _BACKEND_BATCH_MODE=1.
/// Connections are served only while a batch command runs; others are closed at once (input() returns "").
/// </summary>
internal sealed class UserInputServer : IDisposable
{
    private readonly AgentLink _link;
    private readonly Socket? _listener;
    private readonly string _path;
    private readonly Lock _gate = new();
    private readonly Queue<Socket> _waiting = new();
    private bool _open;

    public UserInputServer(string path, AgentLink link, CancellationToken stopping)
    {
        _link = link;
        _path = path;
        try
        {
            if (File.Exists(path))
            {
                File.Delete(path); // left by an earlier runner
            }
            var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                listener.Bind(new UnixDomainSocketEndPoint(path));
                listener.Listen(16);
            }
            catch
            {
                listener.Dispose();
                throw;
            }
            _listener = listener;
            _ = AcceptForeverAsync(listener, stopping);
        }
        catch (Exception exception) when (exception is SocketException or IOException or UnauthorizedAccessException)
        {
            Log.Warn($"batch-mode input() is unavailable: cannot listen on {path}: {exception.Message}");
        }
    }

    /// <summary>Serve connections from now on (a batch command starts).</summary>
    public void Open()
    {
        lock (_gate)
        {
            _open = true;
        }
    }

    /// <summary>Stop serving (the command ended); whoever still waits gets an empty answer.</summary>
    public void Close()
    {
        lock (_gate)
        {
            _open = false;
            while (_waiting.TryDequeue(out Socket? connection))
            {
                connection.Dispose();
            }
        }
    }

    /// <summary>Answers the oldest waiting connection; false when none waits (the text then goes to stdin).</summary>
    public bool TryAnswer(string text)
    {
        Socket? connection;
        lock (_gate)
        {
            if (!_waiting.TryDequeue(out connection))
            {
                return false;
            }
        }
        try
        {
            connection.Send(Encoding.UTF8.GetBytes(text));
            connection.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException exception)
        {
            Log.Warn($"could not hand input to the batch program: {exception.Message}");
        }
        finally
        {
            connection.Dispose();
        }
        return true;
    }

    public void Dispose()
    {
        Close();
        if (_listener is not null)
        {
            _listener.Dispose();
            try
            {
                File.Delete(_path);
            }
            catch (IOException)
            {
            }
        }
    }

    private async Task AcceptForeverAsync(Socket listener, CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            Socket connection;
            try
            {
                connection = await listener.AcceptAsync(stopping);
            }
            catch (Exception exception) when (exception is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException exception)
            {
                Log.Warn($"user input socket: {exception.Message}");
                await Task.Delay(100, CancellationToken.None);
                continue;
            }
            bool queued;
            lock (_gate)
            {
                queued = _open;
                if (queued)
                {
                    _waiting.Enqueue(connection);
                }
            }
            if (queued)
            {
                // The prompt was written to stdout before the connect; give the output pump a moment to pass it on first.
                await Task.Delay(20, CancellationToken.None);
                _link.SendRunOutput("waiting-input", []);
            }
            else
            {
                connection.Dispose();
            }
        }
    }
}
