using System.Buffers.Binary;

namespace KataAgent.BackendAi.Serialization;

/// <summary>
/// The temporenc encoding of datetimes as Backend.AI's ext 2 carries it: what the Python package temporenc 0.1.0
/// (the version Backend.AI pins) does with a <c>datetime</c>. That version stores aware values as their UTC fields
/// plus the original offset (DTSZ) and hands them back as UTC; naive values become DTS. Python always picks
/// microsecond precision for datetimes; other precisions and the DT/DTZ types are read as well.
/// </summary>
internal static class Temporenc
{
    private const int EmptyYear = 4095;
    private const int EmptyMonth = 15;
    private const int EmptyDay = 31;
    private const int EmptyHour = 31;
    private const int EmptyMinute = 63;
    private const int EmptySecond = 63;
    private const int EmptyZone = 127;
    private const int MaxZone = 126;

    /// <summary>An aware datetime: DTSZ with microsecond precision, 9 bytes.</summary>
    public static byte[] EncodeAware(DateTimeOffset value)
    {
        var offsetMinutes = (int)value.Offset.TotalMinutes;
        if (offsetMinutes % 15 != 0 || value.Offset.Seconds != 0)
        {
            throw new ArgumentException($"temporenc stores UTC offsets in quarter hours; {value.Offset} is not one", nameof(value));
        }

        var zone = (offsetMinutes / 15) + 64;
        if (zone is < 0 or > MaxZone)
        {
            throw new ArgumentException($"UTC offset {value.Offset} is outside temporenc's range", nameof(value));
        }

        var utc = value.UtcDateTime;
        var word = ((UInt128)0b11101 << 67) | ((UInt128)DateBits(utc) << 46) | ((UInt128)TimeBits(utc) << 29)
            | ((UInt128)Microsecond(utc) << 9) | ((UInt128)(uint)zone << 2);
        var bytes = new byte[16];
        BinaryPrimitives.WriteUInt128BigEndian(bytes, word);
        return bytes[7..];
    }

    /// <summary>A naive datetime: DTS with microsecond precision, 8 bytes.</summary>
    public static byte[] EncodeNaive(DateTime value)
    {
        var word = (0b0101UL << 60) | ((ulong)DateBits(value) << 39) | ((ulong)TimeBits(value) << 22) | ((ulong)Microsecond(value) << 2);
        var bytes = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, word);
        return bytes;
    }

    /// <summary>DateTimeOffset (UTC) for the zoned types, DateTime of kind Unspecified for the naive ones.</summary>
    public static object Decode(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
        {
            throw new BackendAiCodecException("temporenc value is empty");
        }

        var first = data[0];
        uint date, time;
        long nanosecond = 0;
        int? zone = null;
        if (first >> 6 == 0b00)
        {
            var n = Word(data, "DT", 5);
            (date, time) = ((uint)(n >> 17), (uint)n);
        }
        else if (first >> 6 == 0b01)
        {
            var precision = (first >> 4) & 0b11;
            var n = Word(data, "DTS", precision switch { 0 => 7, 1 => 8, 2 => 9, _ => 6 });
            var subsecondBits = precision switch { 0 => 14, 1 => 22, 2 => 30, _ => 6 };
            var head = n >> subsecondBits;
            (date, time) = ((uint)(head >> 17), (uint)head);
            nanosecond = precision switch
            {
                0 => (long)((n >> 4) & 0x3FF) * 1_000_000,
                1 => (long)((n >> 2) & 0xFFFFF) * 1_000,
                2 => (long)(n & 0x3FFFFFFF),
                _ => 0,
            };
        }
        else if (first >> 5 == 0b110)
        {
            var n = Word(data, "DTZ", 6);
            (date, time, zone) = ((uint)(n >> 24), (uint)(n >> 7), (int)(n & 0x7F));
        }
        else if (first >> 5 == 0b111)
        {
            var precision = (first >> 3) & 0b11;
            var n = Word(data, "DTSZ", precision switch { 0 => 8, 1 => 9, 2 => 10, _ => 7 });
            var tailBits = precision switch { 0 => 21, 1 => 29, 2 => 37, _ => 13 };
            var head = n >> tailBits;
            (date, time) = ((uint)(head >> 17), (uint)head);
            (nanosecond, zone) = precision switch
            {
                0 => ((long)((n >> 11) & 0x3FF) * 1_000_000, (int)((n >> 4) & 0x7F)),
                1 => ((long)((n >> 9) & 0xFFFFF) * 1_000, (int)((n >> 2) & 0x7F)),
                2 => ((long)((n >> 7) & 0x3FFFFFFF), (int)(n & 0x7F)),
                _ => (0L, (int)((n >> 6) & 0x7F)),
            };
        }
        else if (first >> 5 == 0b100)
        {
            throw new BackendAiCodecException("temporenc value is a date without a time (type D); a datetime was expected");
        }
        else if (first >> 1 == 0b1010000)
        {
            throw new BackendAiCodecException("temporenc value is a time without a date (type T); a datetime was expected");
        }
        else
        {
            throw new BackendAiCodecException($"temporenc value starts with 0x{first:x2}, which is no temporenc type tag");
        }

        var fields = ToDateTime(date & 0x1FFFFF, time & 0x1FFFF, nanosecond);
        if (zone is null || zone == EmptyZone)
        {
            return fields;
        }

        // temporenc 0.1.0 stored UTC fields; Python returns them as a UTC datetime and drops the original offset.
        return new DateTimeOffset(DateTime.SpecifyKind(fields, DateTimeKind.Unspecified), TimeSpan.Zero);
    }

    private static UInt128 Word(ReadOnlySpan<byte> data, string type, int length)
    {
        if (data.Length != length)
        {
            throw new BackendAiCodecException($"temporenc {type} value with this precision must be {length} bytes; got {data.Length}");
        }

        Span<byte> padded = stackalloc byte[16];
        data.CopyTo(padded[(16 - length)..]);
        return BinaryPrimitives.ReadUInt128BigEndian(padded);
    }

    private static DateTime ToDateTime(uint date, uint time, long nanosecond)
    {
        var year = (int)(date >> 9) & 0xFFF;
        var month = (int)(date >> 5) & 0xF;
        var day = (int)date & 0x1F;
        var hour = (int)(time >> 12) & 0x1F;
        var minute = (int)(time >> 6) & 0x3F;
        var second = (int)time & 0x3F;
        if (year == EmptyYear || month == EmptyMonth || day == EmptyDay)
        {
            throw new BackendAiCodecException("temporenc value has no complete date; a datetime was expected");
        }

        if (hour == EmptyHour || minute == EmptyMinute || second == EmptySecond)
        {
            throw new BackendAiCodecException("temporenc value has no complete time; a datetime was expected");
        }

        if (month > 11 || hour > 23 || minute > 59 || second > 59 || nanosecond > 999_999_999 || year == 0)
        {
            throw new BackendAiCodecException(
                $"temporenc value {year:d4}-{month + 1:d2}-{day + 1:d2} {hour:d2}:{minute:d2}:{second:d2}.{nanosecond:d9} is not a valid datetime");
        }

        if (day + 1 > DateTime.DaysInMonth(year, month + 1))
        {
            throw new BackendAiCodecException($"temporenc value has day {day + 1} in {year:d4}-{month + 1:d2}, which has no such day");
        }

        // Python's datetime keeps microseconds; finer digits are dropped as temporenc's .datetime() does.
        var microsecond = nanosecond / 1000;
        return new DateTime(year, month + 1, day + 1, hour, minute, second, DateTimeKind.Unspecified).AddTicks(microsecond * 10);
    }

    private static uint DateBits(DateTime value) => ((uint)value.Year << 9) | ((uint)(value.Month - 1) << 5) | (uint)(value.Day - 1);

    private static uint TimeBits(DateTime value) => ((uint)value.Hour << 12) | ((uint)value.Minute << 6) | (uint)value.Second;

    private static uint Microsecond(DateTime value) => (uint)(value.Ticks % TimeSpan.TicksPerSecond / 10);
}
