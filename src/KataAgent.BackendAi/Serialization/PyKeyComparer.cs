using System.Runtime.CompilerServices;

namespace KataAgent.BackendAi.Serialization;

/// <summary>
/// Map keys as Python compares them where it matters here: bytes by content (not by array identity), everything
/// else by the value's own equality (string, long, Guid…).
/// </summary>
public sealed class PyKeyComparer : IEqualityComparer<object>
{
    public static readonly PyKeyComparer Instance = new();

    private PyKeyComparer()
    {
    }

    public new bool Equals(object? x, object? y)
    {
        if (x is byte[] left && y is byte[] right)
        {
            return left.AsSpan().SequenceEqual(right);
        }

        return object.Equals(x, y);
    }

    public int GetHashCode(object obj)
    {
        if (obj is byte[] bytes)
        {
            var hash = default(HashCode);
            hash.AddBytes(bytes);
            return hash.ToHashCode();
        }

        return obj?.GetHashCode() ?? RuntimeHelpers.GetHashCode(this);
    }
}
