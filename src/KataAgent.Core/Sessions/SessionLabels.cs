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
        // Labels are readable through containerd's API: the runner keys stay in the 0600 record file.
        labels[Record] = record.WithoutSecrets().ToJson();
        return labels;
    }
}
