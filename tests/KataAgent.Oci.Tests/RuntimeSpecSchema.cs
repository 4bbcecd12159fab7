using System.Text.Json;
using System.Text.Json.Nodes;
using Json.Schema;

namespace KataAgent.Oci.Tests;

/// <summary>
/// The runtime-spec JSON schema from Debian's golang-github-opencontainers-specs-dev, loaded
/// with every file it $refs registered under its file URI. A missing package is a failure.
/// </summary>
internal static class RuntimeSpecSchema
{
    public const string Directory = "/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema";

    public const string MissingMessage =
        "runtime-spec JSON schema not found at " + Directory + "/config-schema.json: " +
        "install it with `apt-get install golang-github-opencontainers-specs-dev`";

    private static readonly Lazy<JsonSchema> Schema = new(Load);

    public static bool IsInstalled => File.Exists(Path.Combine(Directory, "config-schema.json"));

    private static JsonSchema Load()
    {
        if (!IsInstalled)
            Assert.Fail(MissingMessage);

        // A private registry: nothing leaks into the global one other tests might use.
        var options = new BuildOptions
        {
            SchemaRegistry = new SchemaRegistry(),
            // The files say draft-04, which JsonSchema.Net does not implement; they use no
            // draft-04-only keyword (no "id", no boolean exclusiveMinimum), so draft-07 reads them the same.
            Dialect = Dialect.Draft07,
        };

        foreach (var path in System.IO.Directory.GetFiles(Directory, "*.json"))
        {
            if (Path.GetFileName(path) is "config-schema.json" or "state-schema.json")
                continue;
            // Plain JSON documents: $refs such as config-linux.json#/linux point into places
            // that are not schemas at the top level.
            var element = JsonDocument.Parse(File.ReadAllText(path)).RootElement.Clone();
            options.SchemaRegistry.Register(FileUri(path), new JsonElementBaseDocument(element, FileUri(path)));
        }

        var rootPath = Path.Combine(Directory, "config-schema.json");
        var root = JsonNode.Parse(File.ReadAllText(rootPath))!.AsObject();
        root.Remove("$schema");
        return JsonSchema.FromText(root.ToJsonString(), options, FileUri(rootPath));
    }

    private static Uri FileUri(string path) => new("file://" + path);

    /// <summary>Schema errors as "instance location: message" lines; empty when valid.</summary>
    public static List<string> Errors(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var results = Schema.Value.Evaluate(doc.RootElement, new EvaluationOptions { OutputFormat = OutputFormat.List });
        if (results.IsValid)
            return [];
        var errors = new List<string>();
        foreach (var detail in results.Details ?? [])
        {
            foreach (var (keyword, message) in detail.Errors ?? new Dictionary<string, string>())
                errors.Add($"{detail.InstanceLocation} ({detail.SchemaLocation}, {keyword}): {message}");
        }

        if (errors.Count == 0)
            errors.Add("invalid, with no detail reported");
        return errors;
    }

    public static void AssertValid(string json)
    {
        var errors = Errors(json);
        Assert.True(errors.Count == 0, "spec does not match the runtime-spec schema:\n" + string.Join("\n", errors) + "\n" + json);
    }
}
