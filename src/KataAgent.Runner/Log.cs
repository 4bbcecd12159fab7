namespace KataAgent.Runner;

/// <summary>Runner diagnostics go to stderr: in a container that is the container's log.</summary>
internal static class Log
{
    private static readonly Lock Gate = new();

    public static bool Verbose { get; set; }

    public static void Info(string message) => Write("info", message);

    public static void Warn(string message) => Write("warn", message);

    public static void Error(string message) => Write("error", message);

    public static void Debug(string message)
    {
        if (Verbose)
        {
            Write("debug", message);
        }
    }

    private static void Write(string level, string message)
    {
        lock (Gate)
        {
            Console.Error.WriteLine($"kata-runner {DateTime.UtcNow:HH:mm:ss.fff} {level}: {message}");
        }
    }
}
