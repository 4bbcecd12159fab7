namespace KataAgent.Cli;

/// <summary>A failure the CLI reports as one line, with the exit code to use.</summary>
internal sealed class CliException(string message, int exitCode = 1) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}
