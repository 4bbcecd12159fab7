namespace KataAgent.BackendAi.Serialization;

/// <summary>
/// Backend.AI's application serializer (<c>ai.backend.common.msgpack.packb/unpackb</c>): RPC bodies and event args.
/// Values are the plain .NET types listed in PyValues.cs.
/// </summary>
public interface IBackendAiCodec
{
    byte[] Pack(object? value);

    object? Unpack(ReadOnlyMemory<byte> data);
}
