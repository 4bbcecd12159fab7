namespace KataAgent.Core.Sessions;

/// <summary>Labels on the containerd container (Backend.AI's, plus ours for recovery).</summary>
public static class SessionLabels
{
    public const string KernelId = "ai.backend.kernel-id";
    public const string SessionId = "ai.backend.session-id";
    public const string Owner = "ai.backend.owner";
    /// <summary>The <see cref="SessionRecord"/> as JSON: enough to rebuild the session after a restart.</summary>
    public const string Record = "io.kata-agent.session";
    public const string RuntimeClass = "io.kata-agent.runtime-class";
    /// <summary>An unclaimed warm-pool member: the pool's key (recovery reaps these).</summary>
    public const string PoolMember = "io.kata-agent.pool";
    /// <summary>A session that was served by claiming a pool member: the pool's key.</summary>
    public const string ClaimedFromPool = "io.kata-agent.claimed-from-pool";

    public static Dictionary<string, string> For(SessionRecord record, string owner, IReadOnlyDictionary<string, string> userLabels)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in userLabels)
        {
            if (key.StartsWith("ai.backend.", StringComparison.Ordinal) || key.StartsWith("io.kata-agent.", StringComparison.Ordinal))
                throw new SessionRequestException($"label '{key}' uses a reserved prefix (ai.backend., io.kata-agent.)");
            labels[key] = value;
        }
        labels[KernelId] = record.KernelId;
        labels[SessionId] = record.SessionId;
        labels[Owner] = owner;
        labels[RuntimeClass] = record.RuntimeClass;
        if (record.Request?.Pool is { } pool)
            labels[PoolMember] = pool;
        // Labels are readable through containerd's API: the runner keys stay in the 0600 record file.
        var json = record.WithoutSecrets().ToJson();
        var parts = SplitUtf8(json, MaxRecordPartBytes);
        for (var i = 0; i < parts.Count; i++)
            labels[i == 0 ? Record : $"{Record}.{i}"] = parts[i];
        return labels;
    }

    /// <summary>
    /// containerd refuses a label whose key and value pass 4096 bytes, and a record with many ports or a
    /// long bootstrap script does: the record is split over <c>io.kata-agent.session</c>, <c>.1</c>, <c>.2</c>, …
    /// </summary>
    public const int MaxRecordPartBytes = 4000;

    /// <summary>The record's JSON, joined back from its parts; false when the container carries none.</summary>
    public static bool TryReadRecord(IReadOnlyDictionary<string, string> labels, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out string? json)
    {
        if (!labels.TryGetValue(Record, out var first))
        {
            json = null;
            return false;
        }
        var joined = new System.Text.StringBuilder(first);
        for (var i = 1; labels.TryGetValue($"{Record}.{i}", out var part); i++)
            joined.Append(part);
        json = joined.ToString();
        return true;
    }

    private static List<string> SplitUtf8(string text, int maxBytes)
    {
        var parts = new List<string>();
        var start = 0;
        var bytes = 0;
        for (var i = 0; i < text.Length; i++)
        {
            var width = char.IsHighSurrogate(text[i]) ? 4 : char.IsLowSurrogate(text[i]) ? 0 : text[i] < 0x80 ? 1 : text[i] < 0x800 ? 2 : 3;
            // Never between the halves of a surrogate pair.
            if (bytes + width > maxBytes && width > 0)
            {
                parts.Add(text[start..i]);
                start = i;
                bytes = 0;
            }
            bytes += width;
        }
        parts.Add(text[start..]);
        return parts;
    }
}
