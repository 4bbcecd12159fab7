using System.Text.Json;
using KataAgent.Core.Scratch;

namespace KataAgent.Core.Runs;

/// <summary>Whether a session's runner was started with sequenced output (runner.json, as the agent wrote it).</summary>
public static class RunnerSequencing
{
    /// <summary>
    /// Read from the session's own runner.json, not assumed: a session made by an agent from before sequenced output
    /// has a runner that would never answer `runs`.
    /// </summary>
    public static bool IsEnabled(string scratchRoot, string kernelId)
    {
        var path = Path.Combine(ScratchDirectory.Open(scratchRoot, kernelId).ConfigPath, ScratchDirectory.RunnerFile);
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(path));
            return document.RootElement.ValueKind == JsonValueKind.Object
                && document.RootElement.TryGetProperty("sequencedOutput", out var sequenced) && sequenced.ValueKind == JsonValueKind.True;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            return false;
        }
    }
}
