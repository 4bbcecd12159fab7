using System.Globalization;

namespace KataAgent.Bench;

internal static class Stats
{
    public static double Percentile(IReadOnlyList<double> values, double p)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0)
            return double.NaN;
        var rank = p / 100 * (sorted.Length - 1);
        var lo = (int)Math.Floor(rank);
        var hi = (int)Math.Ceiling(rank);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
    }

    public static string Row(string name, IReadOnlyList<double> ms, IReadOnlyList<double>? baseline = null)
    {
        var p50 = Percentile(ms, 50);
        var ratio = baseline is null ? "" : (p50 / Percentile(baseline, 50)).ToString("0.00", CultureInfo.InvariantCulture);
        return string.Create(CultureInfo.InvariantCulture, $"| {name} | {ms.Count} | {p50:0.0} | {Percentile(ms, 99):0.0} | {ratio} |");
    }
}
