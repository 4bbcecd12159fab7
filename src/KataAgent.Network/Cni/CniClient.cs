using System.Text.Json.Nodes;

namespace KataAgent.Network;

/// <summary>
/// Runs a network configuration list (a "conflist") the way the CNI spec chains plugins: ADD in order, each
/// plugin receiving the previous one's result as prevResult; DEL in reverse order, every plugin receiving the
/// final ADD result; CHECK in order with the final ADD result.
/// </summary>
public sealed class CniClient
{
    public CniClient(CniPluginInvoker invoker) => Invoker = invoker ?? throw new ArgumentNullException(nameof(invoker));

    public CniPluginInvoker Invoker { get; }

    /// <summary>
    /// ADD through the chain. It does not undo on failure: the caller runs <see cref="DeleteAsync"/> with the
    /// last result reported through <paramref name="onPluginAdded"/> (reported even if a later plugin fails or the
    /// call is cancelled), which is what plugins such as firewall need to find their own rules.
    /// </summary>
    public async Task<CniResult> AddAsync(JsonObject configList, CniRuntimeConfig runtime, Action<JsonObject>? onPluginAdded = null,
        CancellationToken cancellationToken = default)
    {
        var plugins = Validate(configList);
        JsonObject? previous = null;
        foreach (var plugin in plugins)
        {
            string type = TypeOf(plugin);
            var config = BuildPluginConfig(configList, plugin, previous, runtime);
            var result = await Invoker.InvokeAsync(CniCommand.Add, type, config, runtime, cancellationToken).ConfigureAwait(false)
                         ?? throw new CniPluginException(type, CniCommand.Add, $"CNI plugin '{type}' ADD for container '{runtime.ContainerId}' succeeded but printed no result");
            previous = result;
            onPluginAdded?.Invoke(result);
        }
        return CniResult.Parse(previous!);
    }

    /// <summary>
    /// DEL through the chain in reverse. Every plugin is tried even if one fails (plugins are required to treat
    /// missing resources as success, so a failure is real); the failures are then thrown together.
    /// </summary>
    public async Task DeleteAsync(JsonObject configList, CniRuntimeConfig runtime, JsonObject? previousResult,
        CancellationToken cancellationToken = default)
    {
        var plugins = Validate(configList);
        var failures = new List<Exception>();
        for (int i = plugins.Count - 1; i >= 0; i--)
        {
            string type = TypeOf(plugins[i]);
            try
            {
                var config = BuildPluginConfig(configList, plugins[i], previousResult, runtime);
                await Invoker.InvokeAsync(CniCommand.Del, type, config, runtime, cancellationToken).ConfigureAwait(false);
            }
            catch (CniException e)
            {
                failures.Add(e);
            }
        }
        if (failures.Count == 1)
            throw failures[0];
        if (failures.Count > 1)
        {
            throw new CniException($"CNI DEL for container '{runtime.ContainerId}' failed in {failures.Count} plugins: "
                                   + string.Join("; ", failures.Select(f => f.Message)), new AggregateException(failures));
        }
    }

    /// <summary>CHECK through the chain, except plugin types in <paramref name="skipTypes"/>; throws the first plugin's complaint.</summary>
    public async Task CheckAsync(JsonObject configList, CniRuntimeConfig runtime, JsonObject previousResult,
        IReadOnlyCollection<string>? skipTypes = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(previousResult);
        var plugins = Validate(configList);
        if (configList["disableCheck"] is JsonValue v && v.TryGetValue(out bool disabled) && disabled)
            return;
        foreach (var plugin in plugins.Where(p => skipTypes is null || !skipTypes.Contains(TypeOf(p))))
        {
            var config = BuildPluginConfig(configList, plugin, previousResult, runtime);
            await Invoker.InvokeAsync(CniCommand.Check, TypeOf(plugin), config, runtime, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// One plugin's stdin: its own object plus the list's name and cniVersion, prevResult, and runtimeConfig
    /// holding only the capability arguments the plugin declared in "capabilities".
    /// </summary>
    internal static JsonObject BuildPluginConfig(JsonObject configList, JsonObject plugin, JsonObject? previousResult, CniRuntimeConfig runtime)
    {
        var config = (JsonObject)plugin.DeepClone();
        config["name"] = configList["name"]!.DeepClone();
        config["cniVersion"] = configList["cniVersion"]!.DeepClone();
        config.Remove("prevResult");
        if (previousResult is not null)
            config["prevResult"] = previousResult.DeepClone();

        var runtimeConfig = new JsonObject();
        if (plugin["capabilities"] is JsonObject capabilities)
        {
            foreach (var (name, enabled) in capabilities)
            {
                if (enabled is JsonValue e && e.TryGetValue(out bool on) && on && runtime.CapabilityArgs.TryGetValue(name, out var value))
                    runtimeConfig[name] = value?.DeepClone();
            }
        }
        config.Remove("runtimeConfig");
        if (runtimeConfig.Count > 0)
            config["runtimeConfig"] = runtimeConfig;
        return config;
    }

    internal static IReadOnlyList<JsonObject> Validate(JsonObject configList)
    {
        ArgumentNullException.ThrowIfNull(configList);
        if (configList["name"] is not JsonValue name || !name.TryGetValue(out string? n) || string.IsNullOrEmpty(n))
            throw new CniException("CNI config list has no \"name\"");
        if (configList["cniVersion"] is not JsonValue version || !version.TryGetValue(out string? _))
            throw new CniException($"CNI config list '{n}' has no \"cniVersion\"");
        if (configList["plugins"] is not JsonArray plugins || plugins.Count == 0)
            throw new CniException($"CNI config list '{n}' has no plugins");
        var result = new List<JsonObject>();
        foreach (var plugin in plugins)
        {
            if (plugin is not JsonObject p || p["type"] is not JsonValue t || !t.TryGetValue(out string? _))
                throw new CniException($"CNI config list '{n}' has a plugin without a \"type\"");
            result.Add(p);
        }
        return result;
    }

    private static string TypeOf(JsonObject plugin) => (string)plugin["type"]!;
}
