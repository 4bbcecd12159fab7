using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace KataAgent.Core.Logs;

/// <summary>The agent's running log relays, one per live session (see <see cref="LogRelay"/>).</summary>
public sealed class LogRelays(string logDir, long maxBytes, ILogger logger) : IDisposable
{
    public const string FifoExtension = ".fifo";

    private readonly ConcurrentDictionary<string, LogRelay> _relays = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    public string FifoPath(string kernelId) => Path.Combine(logDir, kernelId + FifoExtension);

    /// <summary>Starts the session's relay (or keeps the running one) and returns the FIFO the shim must write to.</summary>
    public string Start(string kernelId, string logPath)
    {
        Scratch.ScratchDirectory.ValidateSessionId(kernelId);
        lock (_lock)
        {
            if (!_relays.ContainsKey(kernelId))
            {
                Directory.CreateDirectory(logDir);
                _relays[kernelId] = LogRelay.Start(FifoPath(kernelId), logPath, maxBytes, kernelId, logger);
            }
        }
        return FifoPath(kernelId);
    }

    /// <summary>Stops the session's relay (if running) and, with <paramref name="removeFifo"/>, deletes its FIFO.</summary>
    public void Stop(string kernelId, bool removeFifo)
    {
        if (_relays.TryRemove(kernelId, out var relay))
            relay.Dispose();
        if (removeFifo && Scratch.ScratchDirectory.IsValidSessionId(kernelId))
            File.Delete(FifoPath(kernelId));
    }

    /// <summary>Sessions whose relay runs (for the leak census).</summary>
    public IReadOnlyList<string> Running => _relays.Keys.ToList();

    /// <summary>FIFO files in the log dir (for the leak census and orphan cleanup).</summary>
    public IReadOnlyList<string> Fifos() =>
        Directory.Exists(logDir) ? Directory.GetFiles(logDir, "*" + FifoExtension).Select(Path.GetFileName).OfType<string>().ToList() : [];

    /// <summary>Stops every relay; the FIFOs stay for the next agent (the sessions keep running).</summary>
    public void Dispose()
    {
        foreach (var id in _relays.Keys.ToList())
            Stop(id, removeFifo: false);
    }
}
