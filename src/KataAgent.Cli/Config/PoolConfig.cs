using KataAgent.Core.Pool;
using Tomlyn.Model;

namespace KataAgent.Cli.Config;

/// <summary>
/// <c>[[pool]]</c> entries: one warm pool each (docs/POOL.md). Keys: image, runtime, cpus, memory (required), min,
/// max, target_idle (optional). Every problem names the entry and its key.
/// </summary>
internal static class PoolConfig
{
    public const string Section = "pool";

    private static readonly string[] Keys = ["image", "runtime", "cpus", "memory", "min", "max", "target_idle"];

    public static List<PoolSpec> Parse(TomlTableArray entries, string sourceName, List<string> problems)
    {
        var pools = new List<PoolSpec>();
        for (var i = 0; i < entries.Count; i++)
        {
            var entry = entries[i];
            var at = $"[[pool]] #{i + 1} ({sourceName})";
            var before = problems.Count;
            foreach (var key in entry.Keys.Where(k => !Keys.Contains(k, StringComparer.Ordinal)))
                problems.Add($"{at}: unknown key '{key}' (known: {string.Join(", ", Keys)})");
            T? Read<T>(string key, Func<ConfigValue, T> read, bool required)
            {
                if (!entry.TryGetValue(key, out var raw))
                {
                    if (required)
                        problems.Add($"{at}: '{key}' is required");
                    return default;
                }
                try
                {
                    return read(new ConfigValue($"pool.{key}", raw, sourceName));
                }
                catch (Exception e) when (e is FormatException or OverflowException)
                {
                    problems.Add($"{at}: {e.Message}");
                    return default;
                }
            }
            var image = Read("image", v => v.NonEmptyString(), required: true);
            var runtime = Read("runtime", v => v.NonEmptyString(), required: true);
            var cpus = Read("cpus", v => v.Double(0.01, 1024), required: true);
            var memory = Read("memory", v => v.Size(min: 16L << 20), required: true);
            var defaults = new PoolSpec { Image = "-", RuntimeClass = "-", Cpus = 1, MemoryBytes = 1 };
            var min = entry.ContainsKey("min") ? Read("min", v => v.Int(0, 1000), false) : defaults.Min;
            var max = entry.ContainsKey("max") ? Read("max", v => v.Int(1, 1000), false) : defaults.Max;
            var target = entry.ContainsKey("target_idle") ? Read("target_idle", v => v.Int(0, 1000), false) : defaults.TargetIdle;
            if (problems.Count > before)
                continue;
            var spec = new PoolSpec { Image = image!, RuntimeClass = runtime!, Cpus = cpus, MemoryBytes = memory, Min = min, Max = max, TargetIdle = target };
            try
            {
                spec.Validate();
                if (pools.Any(p => p.Key == spec.Key))
                    problems.Add($"{at}: a second pool of the same image, runtime and shape ({spec.Key})");
                else
                    pools.Add(spec);
            }
            catch (ArgumentException e)
            {
                problems.Add($"{at}: {e.Message}");
            }
        }
        return pools;
    }
}
