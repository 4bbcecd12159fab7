namespace KataAgent.Runner.Execution;

/// <summary>
/// What "*" means for a batch step, judged from the files in the work dir:
/// Makefile → make clean / make / make run; main.c → cc; main.py → the interpreter.
/// Null means "nothing to do" (the step succeeds).
/// </summary>
internal static class BatchHeuristics
{
    public static string? Resolve(string step, string workDir, string pythonPath)
    {
        bool Has(string name) => File.Exists(Path.Combine(workDir, name));
        bool hasMakefile = Has("Makefile") || Has("makefile") || Has("GNUmakefile");
        return step switch
        {
            "clean" => hasMakefile ? "make clean" : null,
            "build" when hasMakefile => "make",
            "build" when Has("main.c") => "cc -O2 -o main main.c",
            "build" => null,
            "exec" when Has("main.py") => $"{Quote(pythonPath)} main.py",
            "exec" when Has("main") => "./main",
            "exec" when hasMakefile => "make run",
            "exec" => "echo 'kata-runner: no main.py, main or Makefile in the work dir' >&2; exit 127",
            _ => null,
        };
    }

    private static string Quote(string value) => "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}
