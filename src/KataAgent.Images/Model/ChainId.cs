namespace KataAgent.Images;

/// <summary>OCI chain IDs: the identity of a stack of layers, and the name containerd gives the committed snapshot of it.</summary>
public static class ChainId
{
    /// <summary>ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).</summary>
    public static IReadOnlyList<string> Compute(IReadOnlyList<string> diffIds)
    {
        var chain = new List<string>(diffIds.Count);
        foreach (var diffId in diffIds)
        {
            chain.Add(chain.Count == 0 ? diffId : OciDigest.Compute(System.Text.Encoding.UTF8.GetBytes(chain[^1] + " " + diffId)));
        }

        return chain;
    }

    /// <summary>The chain ID of the whole stack (the top layer's).</summary>
    public static string Of(IReadOnlyList<string> diffIds)
        => diffIds.Count == 0 ? throw new ArgumentException("an image without layers has no chain ID", nameof(diffIds)) : Compute(diffIds)[^1];
}
