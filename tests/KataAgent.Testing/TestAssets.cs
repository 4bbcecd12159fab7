namespace KataAgent.Testing;

/// <summary>Files under tests/KataAgent.Testing/assets, copied next to the test assemblies.</summary>
public static class TestAssets
{
    /// <summary>
    /// A stand-in for an image's own kernel runner: Python stdlib only, ZMTP 3.0 NULL mechanism, PULL 2000 / PUSH 2001,
    /// answers status (msgpack {started_at}) and code (exec, stdout, finished); leaves everything else unanswered.
    /// </summary>
    public const string ZmtpNullRunner = "zmtp_null_runner.py";

    public static string Path(string name) => System.IO.Path.Combine(AppContext.BaseDirectory, "assets", name);

    public static string ReadText(string name) => File.ReadAllText(Path(name));
}
