using System.Net;

namespace KataAgent.Images.Registry;

/// <summary>A registry refused or failed a request; the message names the registry, the request and the registry's own error.</summary>
public class RegistryException : Exception
{
    public RegistryException(string registry, string message, HttpStatusCode? status = null, IReadOnlyList<string>? errorCodes = null, Exception? innerException = null)
        : base(message, innerException)
    {
        Registry = registry;
        Status = status;
        ErrorCodes = errorCodes ?? [];
    }

    /// <summary>host[:port] of the registry (or mirror) that answered.</summary>
    public string Registry { get; }

    public HttpStatusCode? Status { get; }

    /// <summary>The registry's error codes (MANIFEST_UNKNOWN, BLOB_UNKNOWN, DENIED, ...).</summary>
    public IReadOnlyList<string> ErrorCodes { get; }
}

/// <summary>Credentials missing or rejected, or access denied.</summary>
public sealed class RegistryAuthenticationException(string registry, string message, HttpStatusCode? status = null, IReadOnlyList<string>? errorCodes = null, Exception? innerException = null)
    : RegistryException(registry, message, status, errorCodes, innerException);

/// <summary>The repository, tag, manifest or blob does not exist in the registry.</summary>
public sealed class RegistryNotFoundException(string registry, string message, HttpStatusCode? status = null, IReadOnlyList<string>? errorCodes = null)
    : RegistryException(registry, message, status, errorCodes);

/// <summary>The registry could not be reached, or failed with a server error, or the transfer broke off: trying again may work.</summary>
public sealed class RegistryUnavailableException(string registry, string message, HttpStatusCode? status = null, Exception? innerException = null)
    : RegistryException(registry, message, status, null, innerException);

/// <summary>A blob's bytes do not hash to its digest (or are not its size). Nothing from the transfer is registered.</summary>
public sealed class BlobDigestMismatchException(string registry, string digest, string message)
    : RegistryException(registry, message)
{
    /// <summary>The digest the blob should have had.</summary>
    public string Digest { get; } = digest;
}

/// <summary>A pull or push failed for a reason on this side: an image that cannot be used, or containerd refused a step.</summary>
public sealed class ImageTransferException(string message, Exception? innerException = null) : Exception(message, innerException);
