using System.Security.Cryptography;

namespace KataAgent.Images;

/// <summary>Helpers for OCI content digests of the form <c>sha256:&lt;64 lowercase hex&gt;</c>.</summary>
public static class OciDigest
{
    public const string Sha256Prefix = "sha256:";

    /// <summary>True when <paramref name="digest"/> is a well-formed sha256 digest.</summary>
    public static bool IsValid(string? digest)
    {
        if (digest is null || digest.Length != Sha256Prefix.Length + 64 || !digest.StartsWith(Sha256Prefix, StringComparison.Ordinal))
        {
            return false;
        }

        for (var i = Sha256Prefix.Length; i < digest.Length; i++)
        {
            var c = digest[i];
            if (!(c is >= '0' and <= '9' || c is >= 'a' and <= 'f'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Throws <see cref="FormatException"/> naming <paramref name="what"/> when the digest is malformed.</summary>
    public static string Validate(string? digest, string what)
    {
        if (!IsValid(digest))
        {
            throw new FormatException($"{what}: '{digest}' is not a supported digest (expected sha256:<64 lowercase hex digits>)");
        }

        return digest!;
    }

    /// <summary>The hex part of a sha256 digest.</summary>
    public static string Hex(string digest) => Validate(digest, "digest")[Sha256Prefix.Length..];

    public static string FromHash(ReadOnlySpan<byte> sha256) => Sha256Prefix + Convert.ToHexStringLower(sha256);

    public static string Compute(ReadOnlySpan<byte> data) => FromHash(SHA256.HashData(data));

    public static async Task<string> ComputeAsync(Stream stream, CancellationToken cancellationToken)
        => FromHash(await SHA256.HashDataAsync(stream, cancellationToken).ConfigureAwait(false));
}
