namespace KataAgent.Images;

/// <summary>Building an image failed. <see cref="Output"/> holds the failing tool's output, when a tool failed.</summary>
public sealed class ImageBuildException : Exception
{
    public ImageBuildException(string message, string? output = null, Exception? innerException = null)
        : base(output is null ? message : $"{message}\n--- output ---\n{output.TrimEnd()}", innerException)
    {
        Output = output;
    }

    public string? Output { get; }
}
