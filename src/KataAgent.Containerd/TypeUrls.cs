using System.Text.Json;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Google.Protobuf.WellKnownTypes;

namespace KataAgent.Containerd;

/// <summary>
/// containerd names Any payloads by bare proto message name (gogo typeurl), not
/// "type.googleapis.com/...", and registers non-proto types (the OCI spec) under
/// types.containerd.io with JSON bodies. The stock Any helpers assume the former.
/// </summary>
public static class TypeUrls
{
    public const string RuntimeSpec = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
    public const string RuntimeProcess = "types.containerd.io/opencontainers/runtime-spec/1/Process";

    private static readonly TypeRegistry Registry = TypeRegistry.FromFiles(
        global::Containerd.Events.TaskReflection.Descriptor,
        global::Containerd.Events.ContainerReflection.Descriptor,
        global::Containerd.Services.Images.V1.ImageReflection.Descriptor,
        global::Containerd.Events.ContentReflection.Descriptor,
        global::Containerd.Events.NamespaceReflection.Descriptor,
        global::Containerd.Events.SnapshotReflection.Descriptor,
        Io.Containerd.Cgroups.V1.MetricsReflection.Descriptor,
        Io.Containerd.Cgroups.V2.MetricsReflection.Descriptor,
        global::Containerd.Runc.V1.OciReflection.Descriptor,
        Runtimeoptions.V1.ApiReflection.Descriptor);

    /// <summary>Packs a proto message the way containerd's typeurl does.</summary>
    public static Any Pack(IMessage message) =>
        new() { TypeUrl = message.Descriptor.FullName, Value = message.ToByteString() };

    /// <summary>Packs a JSON-serialisable OCI document (spec or process) as containerd expects.</summary>
    public static Any PackJson(string typeUrl, ReadOnlySpan<byte> utf8Json) =>
        new() { TypeUrl = typeUrl, Value = ByteString.CopyFrom(utf8Json) };

    /// <summary>Decodes an Any containerd sent; null when the type is not one we compiled.</summary>
    public static IMessage? Unpack(Any any)
    {
        var name = any.TypeUrl;
        var slash = name.LastIndexOf('/');
        if (slash >= 0)
            name = name[(slash + 1)..];
        var descriptor = Registry.Find(name);
        return descriptor?.Parser.ParseFrom(any.Value);
    }

    public static JsonDocument UnpackJson(Any any) => JsonDocument.Parse(any.Value.Memory);
}
