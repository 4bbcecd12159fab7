using System.Diagnostics;

namespace KataAgent.Runner.Tests;

/// <summary>
/// The NativeAOT runner under test: KATA_RUNNER_BINARY if set, otherwise published once per test run
/// with scripts/publish-runner.sh into a folder of the test's own (the script is idempotent and caches
/// the sysroot, so this is a re-publish of at most a few tens of seconds).
/// </summary>
public sealed class PublishedRunner
{
    public const string PythonPath = "/usr/bin/python3";

    public PublishedRunner()
    {
        if (!File.Exists(PythonPath))
        {
            throw new InvalidOperationException($"the runner tests need {PythonPath} (python3) on the host; it is missing");
        }
        string? prebuilt = Environment.GetEnvironmentVariable("KATA_RUNNER_BINARY");
        if (!string.IsNullOrEmpty(prebuilt))
        {
            BinaryPath = prebuilt;
            return;
        }
        string repositoryRoot = FindRepositoryRoot();
        string outputDir = Path.Combine(repositoryRoot, "artifacts", "runner-tests");
        var publish = new ProcessStartInfo("bash", [Path.Combine(repositoryRoot, "scripts", "publish-runner.sh"), outputDir])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using Process process = Process.Start(publish) ?? throw new InvalidOperationException("cannot start bash");
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> errors = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(15)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("scripts/publish-runner.sh did not finish within 15 minutes");
        }
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"scripts/publish-runner.sh failed ({process.ExitCode}):\n{output.Result}\n{errors.Result}");
        }
        BinaryPath = Path.Combine(outputDir, "kata-runner");
    }

    public string BinaryPath { get; }

    private static string FindRepositoryRoot()
    {
        for (DirectoryInfo? directory = new(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "scripts", "publish-runner.sh")))
            {
                return directory.FullName;
            }
        }
        throw new InvalidOperationException("cannot find the repository root (scripts/publish-runner.sh) above " + AppContext.BaseDirectory);
    }
}

[CollectionDefinition(Name)]
public sealed class RunnerCollection : ICollectionFixture<PublishedRunner>
{
    public const string Name = "published runner";
}
