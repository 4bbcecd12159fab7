namespace KataAgent.Oci;

/// <summary>
/// A spec option got bad input or the finished spec breaks a rule the agent relies on.
/// The message names every problem found, each prefixed with the JSON field it concerns.
/// </summary>
public sealed class InvalidSpecException : Exception
{
    public IReadOnlyList<string> Problems { get; }

    public InvalidSpecException(IReadOnlyList<string> problems)
        : base("invalid OCI runtime spec: " + string.Join("; ", problems))
    {
        Problems = problems;
    }

    public InvalidSpecException(string problem) : this([problem]) { }

    public InvalidSpecException() : this("unspecified problem") { }

    public InvalidSpecException(string message, Exception innerException) : base(message, innerException)
    {
        Problems = [message];
    }
}
