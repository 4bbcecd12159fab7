namespace KataAgent.Testing;

public static class RunnerLocation
{
    /// <summary>The published runner: $KATA_RUNNER_BINARY's folder, else artifacts/runner in the repository.</summary>
    public static string Directory()
    {
        var binary = Environment.GetEnvironmentVariable("KATA_RUNNER_BINARY");
        if (!string.IsNullOrEmpty(binary) && File.Exists(binary))
            return Path.GetDirectoryName(binary)!;
        var dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "KataAgent.slnx")))
            dir = Path.GetDirectoryName(dir);
        var candidate = dir is null ? null : Path.Combine(dir, "artifacts", "runner");
        if (candidate is null || !File.Exists(Path.Combine(candidate, "kata-runner")))
            throw new InvalidOperationException("the kernel runner is not published: run scripts/publish-runner.sh (or set KATA_RUNNER_BINARY)");
        return candidate;
    }
}
