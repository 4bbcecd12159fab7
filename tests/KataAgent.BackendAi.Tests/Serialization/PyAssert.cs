using System.Collections;
using KataAgent.BackendAi.Serialization;

namespace KataAgent.BackendAi.Tests.Serialization;

/// <summary>
/// Compares decoded values field by field with exact .NET types (long is not ulong, byte[] is not string, decimal
/// scale counts, DateTimeOffset offset and DateTime kind count, map order counts), naming the path that differs.
/// </summary>
internal static class PyAssert
{
    public static void Equal(object? expected, object? actual, string path = "$")
    {
        if (expected is null || actual is null)
        {
            Assert.True(expected is null && actual is null, $"{path}: expected {Show(expected)}, got {Show(actual)}");
            return;
        }

        Assert.True(expected.GetType() == actual.GetType(),
            $"{path}: expected a {expected.GetType().Name} ({Show(expected)}), got a {actual.GetType().Name} ({Show(actual)})");
        switch (expected)
        {
            case byte[] bytes:
                Assert.True(bytes.AsSpan().SequenceEqual((byte[])actual), $"{path}: bytes differ: {Show(expected)} vs {Show(actual)}");
                break;
            case decimal number:
                // Same value and same scale: 4.00 and 4 pickle differently.
                Assert.True(number == (decimal)actual && number.Scale == ((decimal)actual).Scale, $"{path}: {number} vs {actual}");
                break;
            case DateTimeOffset moment:
                var other = (DateTimeOffset)actual;
                Assert.True(moment.Ticks == other.Ticks && moment.Offset == other.Offset, $"{path}: {moment:O} vs {other:O}");
                break;
            case DateTime moment:
                var otherTime = (DateTime)actual;
                Assert.True(moment.Ticks == otherTime.Ticks && moment.Kind == otherTime.Kind, $"{path}: {moment:O} ({moment.Kind}) vs {otherTime:O} ({otherTime.Kind})");
                break;
            case double number:
                Assert.True(BitConverter.DoubleToInt64Bits(number) == BitConverter.DoubleToInt64Bits((double)actual), $"{path}: {number:R} vs {actual:R}");
                break;
            case MsgPackExt ext:
                var otherExt = (MsgPackExt)actual;
                Assert.True(ext.Code == otherExt.Code, $"{path}: ext code {ext.Code} vs {otherExt.Code}");
                Equal(ext.Data, otherExt.Data, path + ".Data");
                break;
            case ResourceSlot slots:
                var otherSlots = (ResourceSlot)actual;
                Assert.True(slots.Keys.SequenceEqual(otherSlots.Keys), $"{path}: slots [{string.Join(", ", slots.Keys)}] vs [{string.Join(", ", otherSlots.Keys)}]");
                foreach (var (slot, amount) in slots)
                {
                    Equal(amount, otherSlots[slot], $"{path}[{slot}]");
                }

                break;
            case IDictionary map:
                var otherMap = (IDictionary)actual;
                var entries = Entries(map);
                var otherEntries = Entries(otherMap);
                Assert.True(entries.Count == otherEntries.Count, $"{path}: {entries.Count} entries vs {otherEntries.Count}");
                for (var i = 0; i < entries.Count; i++)
                {
                    Equal(entries[i].Key, otherEntries[i].Key, $"{path}.key[{i}]");
                    Equal(entries[i].Value, otherEntries[i].Value, $"{path}[{Show(entries[i].Key)}]");
                }

                break;
            case object?[] items:
                var otherItems = (object?[])actual;
                Assert.True(items.Length == otherItems.Length, $"{path}: {items.Length} items vs {otherItems.Length}");
                for (var i = 0; i < items.Length; i++)
                {
                    Equal(items[i], otherItems[i], $"{path}[{i}]");
                }

                break;
            default:
                // string, long, ulong, bool, Guid and the records (PyPath, PyEnum, PyImageRef, BinarySize) compare by value.
                Assert.True(expected.Equals(actual), $"{path}: expected {Show(expected)}, got {Show(actual)}");
                break;
        }
    }

    private static List<DictionaryEntry> Entries(IDictionary map)
    {
        var entries = new List<DictionaryEntry>();
        var enumerator = map.GetEnumerator();
        while (enumerator.MoveNext())
        {
            entries.Add(enumerator.Entry);
        }

        return entries;
    }

    private static string Show(object? value) => value switch
    {
        null => "None",
        byte[] bytes => "b'" + Convert.ToHexString(bytes.Length > 40 ? bytes[..40] : bytes) + (bytes.Length > 40 ? "…" : string.Empty) + "'",
        string text => "'" + (text.Length > 60 ? text[..60] + "…" : text) + "'",
        _ => value.ToString() ?? string.Empty,
    };
}
