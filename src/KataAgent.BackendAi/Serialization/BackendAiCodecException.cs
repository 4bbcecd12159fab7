namespace KataAgent.BackendAi.Serialization;

/// <summary>Bytes that Backend.AI's serializer would not have produced, or could not read back.</summary>
public sealed class BackendAiCodecException : Exception
{
    public BackendAiCodecException()
    {
    }

    public BackendAiCodecException(string message)
        : base(message)
    {
    }

    public BackendAiCodecException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
