namespace KataAgent.Runner.Execution;

/// <summary>
/// What "*" means for a batch step, as in Backend.AI's Python runner, judged from the files in the work dir:
/// clean: nothing; build: `make` with a Makefile, else `RUNTIME -m pip install --user -e .` with a setup.py,
/// else nothing; exec: `RUNTIME main.py`, or exit code 127 without a main.py.
/// </summary>
internal static class BatchHeuristics
{
    /// <summary>The exit code of an exec "*" with no main.py (and of an exec after a failed build).</summary>
    public const int NotFoundExitCode = 127;

    /// <summary>A shell command; null means "nothing to do" (the step succeeds), <see cref="MissingMain"/> that exec has nothing to run.</summary>
    public static string? Resolve(string step, string workDir, string pythonPath)
    {
        bool Has(string name) => File.Exists(Path.Combine(workDir, name));
        return step switch
        {
            "build" when Has("Makefile") => "make",
            "build" when Has("setup.py") => $"{Quote(pythonPath)} -m pip install --user -e .",
            "exec" when Has("main.py") => $"{Quote(pythonPath)} main.py",
            "exec" => MissingMain,
            _ => null,
        };
    }

    public const string MissingMain = "\0missing-main";

    private static string Quote(string value) => "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}
