using System.Text;
using KataAgent.BackendAi.Serialization;

namespace KataAgent.BackendAi.Tests.Serialization;

/// <summary>The .NET values of the Python values in assets/make_golden.py, written out by hand.</summary>
internal static class GoldenValues
{
    public const string TypesModule = "ai.backend.common.types";
    public const string ReasonModule = "ai.backend.common.events.event_types.kernel.types";

    public static readonly Guid KernelA = Guid.Parse("0b0e3c52-9d1f-4a6e-8f3a-2c5d7e9f1a2b");
    public static readonly Guid KernelB = Guid.Parse("f47ac10b-58cc-4372-a567-0e02b2c3d479");
    public static readonly Guid Session = Guid.Parse("12345678-9abc-4ef0-8123-456789abcdef");

    public static readonly PyImageRef Image = new("python", "stable", "3.11-ubuntu22.04", "cr.backend.ai", "x86_64", false);

    private static readonly Lazy<byte[]> LazyHeartbeatImages = new(() =>
    {
        var decoded = (object?[])BackendAiCodec.Instance.Unpack(Golden.Packed("heartbeat"))!;
        return (byte[])((Dictionary<object, object?>)decoded[0]!)["images"]!;
    });

    /// <summary>
    /// The heartbeat's images blob is zlib output from CPython, which .NET's zlib does not reproduce byte for byte;
    /// it is taken from the golden and checked separately by inflating it.
    /// </summary>
    public static byte[] HeartbeatImages => LazyHeartbeatImages.Value;

    public static object? Expected(string name) => name switch
    {
        "nil" => null,
        "bools" => Tuple(true, false),
        "ints" => Tuple(
            0L, 1L, 127L, 128L, 255L, 256L, 65535L, 65536L, 4294967295L, 4294967296L, long.MaxValue, 9223372036854775808UL,
            ulong.MaxValue, -1L, -32L, -33L, -128L, -129L, -32768L, -32769L, (long)int.MinValue, (long)int.MinValue - 1, long.MinValue),
        "floats" => Tuple(0.0, 1.5, -2.25, 1e300, double.Epsilon, double.PositiveInfinity, double.NegativeInfinity),
        "str_and_bin" => Map(
            ("str", "h\u00e9llo \u4e16\u754c"),
            ("bin", new byte[] { 0x00, 0xff, 0x10 }),
            ("empty_str", string.Empty),
            ("empty_bin", Array.Empty<byte>()),
            (Encoding.ASCII.GetBytes("bin_key"), "value under a bin key"),
            (7L, "int key"),
            (-3L, Encoding.ASCII.GetBytes("neg"))),
        "long_str_and_bin" => Tuple(
            new string('x', 300),
            Enumerable.Range(0, 512).Select(i => (byte)(i % 256)).ToArray(),
            new string('y', 70000)),
        "tuples_and_lists" => Tuple(1L, Tuple(2L, Tuple(3L, Tuple(4L, 5L))), Tuple(), Tuple(), One(One(null))),
        "uuid" => KernelA,
        "uuid_keys" => Map(
            (KernelA, Map(("kernel", KernelB), ("n", 1L))),
            (KernelB, null),
            (Session, Tuple(KernelA))),
        "datetime_utc" => new DateTimeOffset(2025, 3, 4, 5, 6, 7, TimeSpan.Zero).AddTicks(8_901_230),
        "datetime_utc_whole_second" => new DateTimeOffset(2025, 12, 31, 23, 59, 59, TimeSpan.Zero),
        "datetime_plus_0930" => new DateTimeOffset(2024, 12, 31, 22, 30, 0, 500, TimeSpan.Zero),
        "datetime_naive" => new DateTime(2024, 2, 29, 12, 0, 0, DateTimeKind.Unspecified).AddTicks(10),
        "decimals" => Tuple(1.5m, -0.25m, 8589934592m, 0m, 4.00m, 0.0000001m, -0.000000123456m),
        "paths" => Tuple(
            new PyPath("/home/work/a b"),
            new PyPath("relative/\u00fc", PyPathKind.PurePosixPath),
            new PyPath("/tmp/auto", PyPathKind.AutoDirectoryPath)),
        "enums" => Tuple(
            new PyEnum(TypesModule, "SessionTypes", "batch"),
            new PyEnum(TypesModule, "ClusterMode", "multi-node"),
            new PyEnum(TypesModule, "AutoPullBehavior", "digest"),
            new PyEnum(ReasonModule, "KernelLifecycleEventReason", "user-requested"),
            new PyEnum(TypesModule, "SlotTypes", "bytes")),
        "image_ref" => Image,
        "image_ref_no_project_local" => new PyImageRef("lablup/custom", null, "latest", "local", "aarch64", true),
        "image_ref_empty_strings" => new PyImageRef(string.Empty, string.Empty, "t", "r", "x86_64", false),
        "resource_slot" => Slots(("cpu", 4m), ("mem", 17179869184m), ("cuda.shares", 0.5m)),
        "resource_slot_empty" => new ResourceSlot(),
        "resource_slot_one" => Slots(("cpu", 1m)),
        "binary_sizes" => Tuple(
            new BinarySize(0), new BinarySize(300), new BinarySize(70000), new BinarySize(1L << 33), new BinarySize(-1), new BinarySize(long.MaxValue)),
        "unknown_ext" => Tuple(new MsgPackExt(42, [1, 2, 3]), new MsgPackExt(9, []), new MsgPackExt(100, new byte[16])),
        "create_kernels_args" => CreateKernelsArgs(),
        "heartbeat" => Heartbeat(),
        _ => throw new ArgumentException($"no expectation written for golden '{name}'", nameof(name)),
    };

    /// <summary>What C# packs to reproduce a golden; the same as the decoded value except where Python converts.</summary>
    public static object? PackInput(string name) => name switch
    {
        // Python hands an aware datetime back in UTC, but packs the original offset: pack the +09:30 value.
        "datetime_plus_0930" => new DateTimeOffset(2025, 1, 1, 8, 0, 0, 500, new TimeSpan(9, 30, 0)),
        _ => Expected(name),
    };

    public static object?[] Tuple(params object?[] items) => items;

    /// <summary>A one-item array even when the item is itself an array (params would pass it as the array).</summary>
    public static object?[] One(object? item) => [item];

    public static Dictionary<object, object?> Map(params (object Key, object? Value)[] entries)
    {
        var map = new Dictionary<object, object?>(PyKeyComparer.Instance);
        foreach (var (key, value) in entries)
        {
            map.Add(key, value);
        }

        return map;
    }

    public static ResourceSlot Slots(params (string Slot, decimal Amount)[] slots)
    {
        var result = new ResourceSlot();
        foreach (var (slot, amount) in slots)
        {
            result.Add(slot, amount);
        }

        return result;
    }

    private static object?[] CreateKernelsArgs()
    {
        var session = Session.ToString();
        var digest = new PyEnum(TypesModule, "AutoPullBehavior", "digest");
        var singleNode = new PyEnum(TypesModule, "ClusterMode", "single-node");
        var imageConfig = Map(
            ("canonical", "cr.backend.ai/stable/python:3.11-ubuntu22.04"),
            ("project", "stable"),
            ("architecture", "x86_64"),
            ("digest", "sha256:" + string.Concat(Enumerable.Repeat("ab", 32))),
            ("repo_digest", null),
            ("registry", Map(("name", "cr.backend.ai"), ("url", "https://cr.backend.ai"), ("username", null), ("password", null))),
            ("labels", Map(("ai.backend.service-ports", "jupyter:http:8081"), ("ai.backend.features", "batch query uid-match"))),
            ("is_local", false),
            ("auto_pull", digest));
        var config = Map(
            ("image", imageConfig),
            ("kernel_id", KernelA.ToString()),
            ("session_id", session),
            ("owner_user_id", Guid.Parse("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")),
            ("owner_project_id", null),
            ("network_id", session),
            ("auto_pull", digest),
            ("session_type", new PyEnum(TypesModule, "SessionTypes", "interactive")),
            ("cluster_mode", singleNode),
            ("cluster_role", "main"),
            ("cluster_idx", 1L),
            ("cluster_hostname", "main1"),
            ("local_rank", 0L),
            ("uid", 1000L),
            ("main_gid", 1000L),
            ("supplementary_gids", Tuple()),
            ("resource_slots", Map(("cpu", "1"), ("mem", "1073741824"))),
            ("resource_opts", Map(("shmem", "64m"))),
            ("environ", Map(("BACKENDAI_SESSION_ID", session), ("BACKENDAI_CLUSTER_SIZE", "1"))),
            ("mounts", Tuple()),
            ("package_directory", Tuple()),
            ("idle_timeout", 600L),
            ("bootstrap_script", null),
            ("startup_command", null),
            ("internal_data", null),
            ("preopen_ports", Tuple()),
            ("allocated_host_ports", Tuple()),
            ("scaling_group", "default"),
            ("agent_addr", "tcp://127.0.0.1:6001"),
            ("endpoint_id", null));
        var clusterInfo = Map(
            ("mode", singleNode),
            ("size", 1L),
            ("replicas", Map(("main", 1L))),
            ("network_config", Map()),
            ("ssh_keypair", Map(("public_key", "ssh-rsa AAAA test"), ("private_key", "-----BEGIN PRIVATE KEY-----"))),
            ("cluster_ssh_port_mapping", null));
        return Tuple(session, Tuple(KernelA.ToString()), Tuple(config), clusterInfo, Map((KernelA, Image)));
    }

    private static object?[] Heartbeat() => Tuple(Map(
        ("ip", "127.0.0.1"),
        ("region", "local"),
        ("scaling_group", "default"),
        ("addr", "tcp://127.0.0.1:6011"),
        ("public_key", null),
        ("public_host", "127.0.0.1"),
        ("available_resource_slots", Slots(("cpu", 2m), ("mem", 4294967296m))),
        ("slot_key_and_units", Map(("cpu", new PyEnum(TypesModule, "SlotTypes", "count")), ("mem", new PyEnum(TypesModule, "SlotTypes", "bytes")))),
        ("version", "25.15.0"),
        ("compute_plugins", Map(("cpu", Map(("version", "1"))), ("mem", Map(("version", "1"))))),
        ("images", HeartbeatImages),
        ("images_opts", Map(("compression", "zlib"))),
        ("architecture", "x86_64"),
        ("auto_terminate_abusing_kernel", false),
        ("scratch_disk", new BinarySize(10L << 30)),
        ("timestamp", new DateTimeOffset(2026, 12, 1, 20, 0, 0, TimeSpan.Zero).AddTicks(1_234_560))));
}
