using System.IO.Compression;
using KataAgent.BackendAi.Serialization;

namespace KataAgent.BackendAi.Tests.Serialization;

/// <summary>Both directions against the bytes CPython wrote (assets/golden/golden.json).</summary>
public sealed class CodecGoldenTests
{
    private static readonly BackendAiCodec Codec = BackendAiCodec.Instance;

    public static TheoryData<string> PackedNames() => new(Golden.PackedNames());

    [Theory]
    [MemberData(nameof(PackedNames))]
    public void Unpack_GivesTheExpectedValues(string name)
    {
        PyAssert.Equal(GoldenValues.Expected(name), Codec.Unpack(Golden.Packed(name)));
    }

    [Theory]
    [MemberData(nameof(PackedNames))]
    public void Pack_GivesCPythonsBytes(string name)
    {
        var golden = Golden.Packed(name);
        var packed = Codec.Pack(GoldenValues.PackInput(name));
        Assert.True(golden.AsSpan().SequenceEqual(packed),
            $"{name}:\n python {Convert.ToHexString(golden)}\n c#     {Convert.ToHexString(packed)}");
    }

    [Fact]
    public void EveryGoldenHasAnExpectation()
    {
        // A golden added to make_golden.py without a C# expectation must not go untested.
        Assert.True(Golden.PackedNames().Count() >= 26);
        foreach (var name in Golden.PackedNames())
        {
            _ = GoldenValues.Expected(name);
        }
    }

    [Fact]
    public void HeartbeatImages_InflateToTheImageList()
    {
        using var inflater = new ZLibStream(new MemoryStream(GoldenValues.HeartbeatImages), CompressionMode.Decompress);
        using var inflated = new MemoryStream();
        inflater.CopyTo(inflated);
        PyAssert.Equal(
            GoldenValues.One(GoldenValues.Tuple("cr.backend.ai/stable/python:3.11-ubuntu22.04", "sha256:" + string.Concat(Enumerable.Repeat("cd", 32)))),
            Codec.Unpack(inflated.ToArray()));
    }

    [Fact]
    public void ResourceSlot_IsTheSameExtAndPickleInsideTheHeartbeat()
    {
        var heartbeat = (object?[])Codec.Unpack(Golden.Packed("heartbeat"))!;
        var slots = Assert.IsType<ResourceSlot>(((Dictionary<object, object?>)heartbeat[0]!)["available_resource_slots"]);
        Assert.Equal(2m, slots["cpu"]);
        Assert.Equal(4294967296m, slots["mem"]);
    }

    [Fact]
    public void GuidBytes_AreBigEndianOnTheWire()
    {
        // uuid.UUID("0b0e3c52-…").bytes starts 0b 0e 3c 52; .NET's Guid(byte[]) would swap the first groups.
        var packed = Golden.Packed("uuid");
        Assert.Equal("D8010B0E3C529D1F4A6E8F3A2C5D7E9F1A2B", Convert.ToHexString(packed));
    }

    [Theory]
    [InlineData("temporenc_dt", false, 0)]
    [InlineData("temporenc_dts_none", false, 0)]
    [InlineData("temporenc_dts_ms", false, 8_900_000)]
    [InlineData("temporenc_dts_ns", false, 8_901_230)]
    [InlineData("temporenc_dtz", true, 0)]
    [InlineData("temporenc_dtsz_none", true, 0)]
    [InlineData("temporenc_dtsz_ms", true, 8_900_000)]
    [InlineData("temporenc_dtsz_ns", true, 8_901_230)]
    public void Temporenc_EveryTypePythonReads(string name, bool aware, long subsecondTicks)
    {
        // 2025-03-04 05:06:07 in every layout; Python's .datetime() gives UTC for the zoned ones (the fields are UTC).
        var fields = new DateTime(2025, 3, 4, 5, 6, 7, DateTimeKind.Unspecified).AddTicks(subsecondTicks);
        // (object) on both arms: DateTime would otherwise convert implicitly to DateTimeOffset.
        var expected = aware ? (object)new DateTimeOffset(fields, TimeSpan.Zero) : (object)fields;
        PyAssert.Equal(expected, Codec.Unpack(Golden.Crafted(name)));
    }

    [Fact]
    public void Float32_ReadsAsDouble()
    {
        PyAssert.Equal(1.5, Codec.Unpack(Golden.Crafted("float32")));
    }

    [Fact]
    public void DotNetTuplesListsAndDictionaries_PackAsArraysAndMaps()
    {
        var viaDotNetTypes = Codec.Pack((1, new List<string> { "a" }, new Dictionary<string, int> { ["k"] = 2 }));
        var viaPyValues = Codec.Pack(GoldenValues.Tuple(1L, GoldenValues.Tuple("a"), GoldenValues.Map(("k", 2L))));
        Assert.Equal(Convert.ToHexString(viaPyValues), Convert.ToHexString(viaDotNetTypes));
    }

    [Fact]
    public void BytesKeys_CompareByContent()
    {
        var map = (Dictionary<object, object?>)Codec.Unpack(Golden.Packed("str_and_bin"))!;
        Assert.Equal("value under a bin key", map["bin_key"u8.ToArray()]);
        Assert.False(map.ContainsKey("bin_key"));
    }
}
