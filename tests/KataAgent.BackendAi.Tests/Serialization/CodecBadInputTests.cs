using System.Text;
using KataAgent.BackendAi.Serialization;

namespace KataAgent.BackendAi.Tests.Serialization;

/// <summary>Input Backend.AI would not produce gets a BackendAiCodecException that says what is wrong.</summary>
public sealed class CodecBadInputTests
{
    private static readonly BackendAiCodec Codec = BackendAiCodec.Instance;

    [Fact]
    public void EveryTruncation_OfARealMessage_IsAClearError()
    {
        var whole = Golden.Packed("create_kernels_args");
        for (var length = 0; length < whole.Length; length++)
        {
            var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(whole.AsMemory(0, length)));
            Assert.False(string.IsNullOrWhiteSpace(error.Message));
        }
    }

    [Fact]
    public void TrailingBytes_AreRefused()
    {
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(Golden.Packed("uuid").Append((byte)0xc0).ToArray()));
        Assert.Contains("1 bytes follow", error.Message);
    }

    [Fact]
    public void Uuid_With15Bytes_NamesTheLength()
    {
        var data = new byte[] { 0xc7, 15, 1 }.Concat(new byte[15]).ToArray();
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(data));
        Assert.Contains("ext 1 (UUID) carries 15 bytes", error.Message);
    }

    [Theory]
    [InlineData("ebf490ca30fb2a17", "must be 9 bytes; got 8")] // DTSZ cut short
    [InlineData("8f7e0e", "date without a time")] // type D
    [InlineData("a1264c", "time without a date")] // type T
    [InlineData("b0000000", "no temporenc type tag")]
    [InlineData("ebf4e0ca30fb2a1700", "not a valid datetime")] // month 13
    [InlineData("efff90ca30fb2a1700", "has no complete date")] // year field = 4095 (empty)
    [InlineData("ebf48f4a30fb2a1700", "no such day")] // 2025-02-30
    public void BadTemporenc_IsAClearError(string temporencHex, string expected)
    {
        var payload = Convert.FromHexString(temporencHex);
        var data = new byte[] { 0xc7, (byte)payload.Length, 2 }.Concat(payload).ToArray();
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(data));
        Assert.Contains("ext 2 (datetime)", error.Message);
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void UnknownPickleGlobal_IsRefusedByName()
    {
        // os.system("true") as a "Decimal": never called, refused with the global's name.
        var pickle = Pickle(p =>
        {
            p.Str("os");
            p.Str("system");
            p.Op(0x93);
            p.Str("true");
            p.Op(0x85);
            p.Op(0x52);
        });
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(Ext(3, pickle)));
        Assert.Contains("os.system", error.Message);
        Assert.Contains("ext 3 (Decimal)", error.Message);
    }

    [Fact]
    public void UnknownGlobalInsideAResourceSlot_IsRefusedByName()
    {
        var pickle = Pickle(p =>
        {
            p.Str("subprocess");
            p.Str("Popen");
            p.Op(0x93);
            p.Op(0x29);
            p.Op(0x81);
        });
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(Ext(8, pickle)));
        Assert.Contains("subprocess.Popen", error.Message);
    }

    [Fact]
    public void EnumPickledByName_AsPython311Does_IsExplained()
    {
        var pickle = Pickle(p =>
        {
            p.Str("builtins");
            p.Str("getattr");
            p.Op(0x93);
            p.Str("ai.backend.common.types");
            p.Str("SessionTypes");
            p.Op(0x93);
            p.Str("BATCH");
            p.Op(0x86);
            p.Op(0x52);
        });
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(Ext(6, pickle)));
        Assert.Contains("by name", error.Message);
        Assert.Contains("BATCH", error.Message);
    }

    [Fact]
    public void EnumExtHoldingSomethingElse_IsRefused()
    {
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(Ext(6, Pickle(p => p.Str("just a str")))));
        Assert.Contains("ext 6 (enum) unpickled to a String", error.Message);
    }

    [Fact]
    public void DecimalInfinity_DoesNotFitDotNet()
    {
        var pickle = Pickle(p =>
        {
            p.Str("decimal");
            p.Str("Decimal");
            p.Op(0x93);
            p.Str("Infinity");
            p.Op(0x85);
            p.Op(0x52);
        });
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(Ext(3, pickle)));
        Assert.Contains("Decimal('Infinity')", error.Message);
    }

    [Fact]
    public void TruncatedPickle_IsAClearError()
    {
        var golden = Golden.Packed("resource_slot");
        var ext = (ResourceSlot)Codec.Unpack(golden)!;
        Assert.Equal(3, ext.Count);
        // Cut the pickle inside the ext but keep the msgpack framing consistent.
        var pickle = golden.AsSpan(3).ToArray();
        var cut = pickle[..(pickle.Length - 10)];
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(Ext(8, cut)));
        Assert.Contains("ext 8 (ResourceSlot)", error.Message);
        Assert.Contains("truncated", error.Message);
    }

    [Fact]
    public void InvalidUtf8InAStr_IsRefused()
    {
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(new byte[] { 0xa2, 0xc3, 0x28 }));
        Assert.Contains("not valid UTF-8", error.Message);
    }

    [Fact]
    public void NilMapKey_IsRefused()
    {
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(new byte[] { 0x81, 0xc0, 0x01 }));
        Assert.Contains("nil key", error.Message);
    }

    [Fact]
    public void ReservedByte_IsRefused()
    {
        Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(new byte[] { 0xc1 }));
    }

    [Fact]
    public void DeepNesting_IsRefusedNotAStackOverflow()
    {
        var data = Enumerable.Repeat((byte)0x91, 100_000).Append((byte)0xc0).ToArray();
        var error = Assert.Throws<BackendAiCodecException>(() => Codec.Unpack(data));
        Assert.Contains("nesting", error.Message);
    }

    [Fact]
    public void RandomCorruption_OnlyEverGivesAValueOrACodecError()
    {
        var random = new Random(17);
        var sources = new[] { "create_kernels_args", "heartbeat", "resource_slot", "enums", "image_ref", "datetime_utc", "decimals" }
            .Select(Golden.Packed).ToArray();
        for (var round = 0; round < 3000; round++)
        {
            var data = (byte[])sources[round % sources.Length].Clone();
            for (var flips = random.Next(1, 4); flips > 0; flips--)
            {
                data[random.Next(data.Length)] = (byte)random.Next(256);
            }

            try
            {
                Codec.Unpack(data);
            }
            catch (BackendAiCodecException)
            {
            }
        }
    }

    [Fact]
    public void PackingAnUnknownType_NamesIt()
    {
        var error = Assert.Throws<ArgumentException>(() => Codec.Pack(GoldenValues.Tuple(new Uri("http://x"))));
        Assert.Contains("System.Uri", error.Message);
    }

    [Fact]
    public void PackingAnOffsetTemporencCannotHold_NamesIt()
    {
        var error = Assert.Throws<ArgumentException>(() => Codec.Pack(new DateTimeOffset(2025, 1, 1, 0, 0, 0, TimeSpan.FromMinutes(7))));
        Assert.Contains("quarter hours", error.Message);
    }

    private static byte[] Ext(sbyte code, byte[] payload)
    {
        var header = new List<byte> { 0xc8, (byte)(payload.Length >> 8), (byte)payload.Length, (byte)code };
        return [.. header, .. payload];
    }

    private static byte[] Pickle(Action<PickleBuilder> build)
    {
        var builder = new PickleBuilder();
        builder.Op(0x80);
        builder.Op(5);
        build(builder);
        builder.Op(0x2e);
        return builder.ToArray();
    }

    private sealed class PickleBuilder
    {
        private readonly List<byte> _bytes = [];

        public void Op(byte opcode) => _bytes.Add(opcode);

        public void Str(string text)
        {
            var utf8 = Encoding.UTF8.GetBytes(text);
            _bytes.Add(0x8c);
            _bytes.Add((byte)utf8.Length);
            _bytes.AddRange(utf8);
        }

        public byte[] ToArray() => [.. _bytes];
    }
}
