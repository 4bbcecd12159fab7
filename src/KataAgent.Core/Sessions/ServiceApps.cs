using System.Text.Json;

namespace KataAgent.Core.Sessions;

/// <summary>
/// A service port of a session as Backend.AI's agent keeps it: what the image label (or the request) declares, plus
/// what the runner's <c>get-apps</c> answer adds for the same name (how to reach it and what a start may pass).
/// </summary>
public sealed record SessionServicePort(string Name, string Protocol, IReadOnlyList<int> ContainerPorts)
{
    /// <summary>The app's URL template (e.g. <c>http://{host}:{port}/lab</c>), from its service definition.</summary>
    public string? UrlTemplate { get; init; }

    /// <summary>Arguments a start-service request may pass in options.arguments.</summary>
    public IReadOnlyList<string> AllowedArguments { get; init; } = [];

    /// <summary>Environment variables a start-service request may pass in options.envs.</summary>
    public IReadOnlyList<string> AllowedEnvs { get; init; } = [];
}

/// <summary>Turns declared service ports into <see cref="SessionServicePort"/>s and merges the runner's <c>apps-result</c> into them.</summary>
public static class ServiceApps
{
    public static IReadOnlyList<SessionServicePort> FromDefinitions(IEnumerable<ServicePortDefinition> definitions) =>
        definitions.Select(d => new SessionServicePort(d.Name, d.Protocol, d.ContainerPorts)).ToList();

    /// <summary>
    /// As Backend.AI's agent does at create (agent.py, after check_status): each app of
    /// <c>{"status": "done", "data": [{name, url_template?, allowed_arguments?, allowed_envs?}]}</c> is merged into the
    /// declared port of the same name, keeping the declared protocol and ports; apps that no port declares add
    /// nothing (nothing is published that was not declared). A <c>failed</c> status or a malformed answer changes nothing.
    /// </summary>
    public static IReadOnlyList<SessionServicePort> Merge(IReadOnlyList<SessionServicePort> ports, JsonElement appsResult)
    {
        ArgumentNullException.ThrowIfNull(ports);
        if (appsResult.ValueKind != JsonValueKind.Object
            || (appsResult.TryGetProperty("status", out var status) && status.ValueKind == JsonValueKind.String && status.GetString() == "failed")
            || !appsResult.TryGetProperty("data", out var data) || data.ValueKind != JsonValueKind.Array)
        {
            return ports;
        }
        var merged = ports.ToList();
        foreach (var app in data.EnumerateArray())
        {
            if (app.ValueKind != JsonValueKind.Object || !app.TryGetProperty("name", out var nameElement) || nameElement.ValueKind != JsonValueKind.String)
                continue;
            var index = merged.FindIndex(p => p.Name == nameElement.GetString());
            if (index < 0)
                continue;
            var port = merged[index];
            if (app.TryGetProperty("url_template", out var url) && url.ValueKind == JsonValueKind.String)
                port = port with { UrlTemplate = url.GetString() };
            if (StringList(app, "allowed_arguments") is { } arguments)
                port = port with { AllowedArguments = arguments };
            if (StringList(app, "allowed_envs") is { } envs)
                port = port with { AllowedEnvs = envs };
            merged[index] = port;
        }
        return merged;
    }

    private static List<string>? StringList(JsonElement app, string property) =>
        app.TryGetProperty(property, out var list) && list.ValueKind == JsonValueKind.Array
            ? list.EnumerateArray().Where(e => e.ValueKind == JsonValueKind.String).Select(e => e.GetString()!).ToList()
            : null;
}
