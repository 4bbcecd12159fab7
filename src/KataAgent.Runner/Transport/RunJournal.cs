using System.Globalization;
using System.Text;
using System.Text.Json;

namespace KataAgent.Runner.Transport;

/// <summary>One run output message as sent in sequenced mode: its sequence number and the run it belongs to.</summary>
internal sealed record SequencedOutput(long Seq, long Run, string Type, byte[] Payload)
{
    public bool IsRunEnd => RunJournal.IsRunEnd(Type);

    /// <summary>The third frame: <c>{"seq":N,"run":R}</c>.</summary>
    public byte[] Header => Encoding.ASCII.GetBytes(
        $"{{\"seq\":{Seq.ToString(CultureInfo.InvariantCulture)},\"run\":{Run.ToString(CultureInfo.InvariantCulture)}}}");
}

/// <summary>
/// Sequenced output (runner.json <c>sequencedOutput</c>, opted in by our agent): every run output message gets a
/// per-runner sequence number and the number of the run (protocol step) that produced it, and what was sent is kept
/// in a replay buffer bounded in bytes, so that an agent that lost messages (a peer attached to the PUSH socket
/// before its CURVE handshake takes them, or the agent itself was restarted) can ask for them again. The end
/// messages of the last <see cref="KeptRuns"/> runs outlive eviction, so a replay always tells how a run ended.
/// Thread-safe.
/// </summary>
internal sealed class RunJournal(long replayBufferBytes)
{
    /// <summary>Runs listed by `runs`, and runs whose end message survives eviction.</summary>
    public const int KeptRuns = 64;

    /// <summary>A run label longer than this is cut.</summary>
    public const int MaxLabelLength = 200;

    private readonly Lock _gate = new();
    private readonly LinkedList<SequencedOutput> _retained = new();
    private readonly LinkedList<RunRecord> _runs = new();
    private long _retainedBytes;
    private int _retainedEnds;
    private long _nextSeq = 1;
    private long _nextRun = 1;
    private RunRecord? _current;
    private string? _pendingLabel;

    public long ReplayBufferBytes => replayBufferBytes;

    public static bool IsRunEnd(string type) => type is "finished" or "clean-finished" or "build-finished";

    /// <summary>`run-label`: the agent's name for the next `code` or `clean` (a batch's build and exec keep it).</summary>
    public void SetNextLabel(string label)
    {
        lock (_gate)
        {
            _pendingLabel = label.Length <= MaxLabelLength ? label : label[..MaxLabelLength];
        }
    }

    /// <summary>A run request arrived (receive thread): it is queued until the worker starts it.</summary>
    public void Queue(string type)
    {
        lock (_gate)
        {
            string? label;
            if (type is "code" or "clean")
            {
                label = _pendingLabel;
                _pendingLabel = null;
            }
            else
            {
                label = _pendingLabel ?? _runs.Last?.Value.Label;
                _pendingLabel = null;
            }
            _runs.AddLast(new RunRecord(_nextRun++, type, label));
            while (_runs.Count > KeptRuns && _runs.First!.Value.State != RunState.Queued)
            {
                _runs.RemoveFirst();
            }
        }
    }

    /// <summary>The worker takes the oldest queued run: the output from now on is that run's.</summary>
    public void StartNext()
    {
        lock (_gate)
        {
            RunRecord? next = _runs.FirstOrDefault(record => record.State == RunState.Queued);
            if (next is null)
            {
                return;
            }
            next.State = RunState.Running;
            next.FirstSeq = _nextSeq;
            _current = next;
        }
    }

    /// <summary>Numbers a run output message, in the order it is queued for the agent.</summary>
    public SequencedOutput Assign(string type, byte[] payload)
    {
        lock (_gate)
        {
            long seq = _nextSeq++;
            RunRecord? run = _current;
            if (run is not null)
            {
                run.LastSeq = seq;
                if (IsRunEnd(type))
                {
                    run.State = RunState.Ended;
                    run.ExitCode = ReadExitCode(payload);
                    _current = null;
                }
            }
            return new SequencedOutput(seq, run?.Run ?? 0, type, payload);
        }
    }

    /// <summary>Keeps a message that is being sent; evicts the oldest beyond the byte bound (run ends of the last runs stay).</summary>
    public void Retain(SequencedOutput message)
    {
        lock (_gate)
        {
            _retained.AddLast(message);
            _retainedBytes += message.Payload.Length;
            if (message.IsRunEnd)
            {
                _retainedEnds++;
            }
            LinkedListNode<SequencedOutput>? node = _retained.First;
            while (node is not null && (_retainedBytes > replayBufferBytes || _retainedEnds > KeptRuns))
            {
                LinkedListNode<SequencedOutput>? next = node.Next;
                bool keep = node.Value.IsRunEnd && _retainedEnds <= KeptRuns;
                if (!keep && node != _retained.Last)
                {
                    _retainedBytes -= node.Value.Payload.Length;
                    if (node.Value.IsRunEnd)
                    {
                        _retainedEnds--;
                    }
                    _retained.Remove(node);
                }
                node = next;
            }
        }
    }

    /// <summary>
    /// What `replay` from <paramref name="from"/> resends: every retained message with seq &gt;= from, in order, and a
    /// `replay-gap` <c>{"from","to"}</c> (two frames) in place of every run of evicted messages among them.
    /// Only messages already handed to the socket are retained: later ones follow as live output.
    /// </summary>
    public List<(string Type, byte[] Payload, byte[]? Header)> Replay(long from)
    {
        var messages = new List<(string, byte[], byte[]?)>();
        lock (_gate)
        {
            long expected = Math.Max(1, from);
            foreach (SequencedOutput message in _retained)
            {
                if (message.Seq < expected)
                {
                    continue;
                }
                if (message.Seq > expected)
                {
                    messages.Add(("replay-gap", Encoding.ASCII.GetBytes(
                        $"{{\"from\":{expected.ToString(CultureInfo.InvariantCulture)},\"to\":{(message.Seq - 1).ToString(CultureInfo.InvariantCulture)}}}"), null));
                }
                messages.Add((message.Type, message.Payload, message.Header));
                expected = message.Seq + 1;
            }
        }
        return messages;
    }

    /// <summary>`runs-result`: <c>{"nextSeq", "oldestSeq", "replayBufferBytes", "runs": [{"run", "type", "label"?, "state", "firstSeq"?, "lastSeq"?, "exitCode"?}]}</c>.</summary>
    public byte[] DescribeRuns()
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            lock (_gate)
            {
                writer.WriteStartObject();
                writer.WriteNumber("nextSeq", _nextSeq);
                writer.WriteNumber("oldestSeq", _retained.First?.Value.Seq ?? _nextSeq);
                writer.WriteNumber("replayBufferBytes", replayBufferBytes);
                writer.WriteStartArray("runs");
                foreach (RunRecord run in _runs)
                {
                    writer.WriteStartObject();
                    writer.WriteNumber("run", run.Run);
                    writer.WriteString("type", run.Type);
                    if (run.Label is not null)
                    {
                        writer.WriteString("label", run.Label);
                    }
                    writer.WriteString("state", run.State switch { RunState.Queued => "queued", RunState.Running => "running", _ => "ended" });
                    if (run.FirstSeq is long first)
                    {
                        writer.WriteNumber("firstSeq", first);
                    }
                    if (run.LastSeq is long last)
                    {
                        writer.WriteNumber("lastSeq", last);
                    }
                    if (run.ExitCode is int exitCode)
                    {
                        writer.WriteNumber("exitCode", exitCode);
                    }
                    writer.WriteEndObject();
                }
                writer.WriteEndArray();
                writer.WriteEndObject();
            }
        }
        return buffer.ToArray();
    }

    /// <summary>`replay` payload <c>{"from": N}</c>; null when it is not that.</summary>
    public static long? ReadReplayFrom(byte[] payload)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(payload);
            return document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("from", out JsonElement from)
                && from.TryGetInt64(out long value) ? value : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static int? ReadExitCode(byte[] payload)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(payload);
            return document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("exitCode", out JsonElement code)
                && code.TryGetInt32(out int value) ? value : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private enum RunState
    {
        Queued,
        Running,
        Ended,
    }

    private sealed class RunRecord(long run, string type, string? label)
    {
        public long Run { get; } = run;
        public string Type { get; } = type;
        public string? Label { get; } = label;
        public RunState State { get; set; }
        public long? FirstSeq { get; set; }
        public long? LastSeq { get; set; }
        public int? ExitCode { get; set; }
    }
}
