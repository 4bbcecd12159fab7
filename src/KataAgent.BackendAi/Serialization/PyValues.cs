namespace KataAgent.BackendAi.Serialization;

// What Backend.AI's serializer (ai.backend.common.msgpack) carries, decoded into plain .NET values. The codec maps:
//   nil → null · bool → bool · int → long (ulong above long.MaxValue) · float → double · str → string · bin → byte[]
//   array (Python tuple or list) → object?[] · map → Dictionary<object, object?> (keys: string, long, Guid, byte[]…)
//   ext 1 → Guid (RFC 4122 big-endian bytes) · ext 2 → DateTimeOffset (temporenc; aware datetimes come back in UTC,
//   as temporenc 0.1.0 returns them) or, for a naive Python datetime, DateTime of kind Unspecified
//   ext 4 / 5 / 17 → PyPath · ext 3 → decimal · ext 6 → PyEnum · ext 7 → PyImageRef · ext 8 → ResourceSlot
//   ext 16 → BinarySize · any other ext → MsgPackExt (passed through unchanged)
// The same types encode back to the same ext codes.

/// <summary>PosixPath (ext 4), PurePosixPath (ext 5) or AutoDirectoryPath (ext 17).</summary>
public sealed record PyPath(string Path, PyPathKind Kind = PyPathKind.PosixPath);

public enum PyPathKind
{
    PosixPath = 4,
    PurePosixPath = 5,
    AutoDirectoryPath = 17,
}

/// <summary>
/// A pickled Python enum member (ext 6): unpickling calls <c>Module.ClassName(Value)</c>, so the value is what matters.
/// </summary>
public sealed record PyEnum(string Module, string ClassName, object? Value);

/// <summary>ai.backend.common.docker.ImageRef (ext 7). Project is None for images outside a project.</summary>
public sealed record PyImageRef(string Name, string? Project, string Tag, string Registry, string Architecture, bool IsLocal);

/// <summary>ai.backend.common.types.ResourceSlot (ext 8): a dict of slot name → Decimal.</summary>
public sealed class ResourceSlot : Dictionary<string, decimal>
{
    public ResourceSlot()
        : base(StringComparer.Ordinal)
    {
    }

    public ResourceSlot(IDictionary<string, decimal> slots)
        : base(slots, StringComparer.Ordinal)
    {
    }
}

/// <summary>ai.backend.common.types.BinarySize (ext 16): an int subclass counting bytes.</summary>
public readonly record struct BinarySize(long Bytes);

/// <summary>An ext type the codec does not know, kept as it came.</summary>
public sealed record MsgPackExt(sbyte Code, byte[] Data);
