namespace KataAgent.Network;

/// <summary>A network namespace operation failed; <see cref="Errno"/> is the failing call's errno (0 if none).</summary>
public sealed class NetworkNamespaceException : IOException
{
    public NetworkNamespaceException(string message, int errno = 0, Exception? inner = null)
        : base(message, inner) => Errno = errno;

    public int Errno { get; }
}
