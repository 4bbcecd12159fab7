using System.Text.Json.Nodes;
using static KataAgent.Oci.SpecOpts;

namespace KataAgent.Oci.Tests;

public class SchemaTests
{
    [Fact]
    public void SchemaPackageIsInstalled()
    {
        Assert.True(RuntimeSpecSchema.IsInstalled, RuntimeSpecSchema.MissingMessage);
    }

    [Fact]
    public void MinimalSpecMatchesSchema()
    {
        var json = Specs.ToJson(Specs.Generate(WithProcessArgs("/bin/sh")));
        RuntimeSpecSchema.AssertValid(json);

        var node = JsonNode.Parse(json)!;
        Assert.Equal("1.0.2", (string?)node["ociVersion"]);
        Assert.Equal("/bin/sh", (string?)node["process"]!["args"]![0]);
        Assert.Equal("rootfs", (string?)node["root"]!["path"]);
    }

    [Fact]
    public void FullSpecMatchesSchema()
    {
        var json = Specs.ToJson(Specs.Generate(TestSpecs.Full()));
        RuntimeSpecSchema.AssertValid(json);

        var node = JsonNode.Parse(json)!;
        var namespaces = node["linux"]!["namespaces"]!.AsArray();
        Assert.Contains(namespaces, n => (string?)n!["type"] == "network" && (string?)n["path"] == "/var/run/netns/sess-1");
        Assert.Equal(2L * 1024 * 1024 * 1024, (long?)node["linux"]!["resources"]!["memory"]!["limit"]);
        Assert.Equal("SCMP_ACT_ERRNO", (string?)node["linux"]!["seccomp"]!["defaultAction"]);
        Assert.Equal("v1", (string?)node["annotations"]!["ai.example/session"]);
    }

    [Fact]
    public void ImageConfigSpecMatchesSchema()
    {
        var spec = Specs.Generate(ImageSpecOpts.WithImageConfig(TestSpecs.PythonImage()), WithMemoryLimit(512L << 20));
        RuntimeSpecSchema.AssertValid(Specs.ToJson(spec));
    }

    [Fact]
    public void SpecWithUserMatchesSchema()
    {
        var spec = Specs.Generate(WithProcessArgs("/bin/true"), WithUser("1000:1000"), WithAdditionalGids(27, 100));
        var json = Specs.ToJson(spec);
        RuntimeSpecSchema.AssertValid(json);
        Assert.Equal("[27,100]", JsonNode.Parse(json)!["process"]!["user"]!["additionalGids"]!.ToJsonString());
    }

    // The validator must be able to say no, or the tests above prove nothing.
    [Theory]
    [InlineData("time namespace", """{"type":"time"}""")]
    [InlineData("bogus namespace", """{"type":"bogus"}""")]
    public void SchemaRejectsUnknownNamespaceTypes(string what, string ns)
    {
        var node = JsonNode.Parse(Specs.ToJson(Specs.Generate(WithProcessArgs("/bin/sh"))))!;
        node["linux"]!["namespaces"]!.AsArray().Add(JsonNode.Parse(ns));
        Assert.True(RuntimeSpecSchema.Errors(node.ToJsonString()).Count > 0, $"schema accepted a {what}");
    }

    [Fact]
    public void SchemaRejectsBadRlimitAndMissingCwd()
    {
        var node = JsonNode.Parse(Specs.ToJson(Specs.Generate(WithProcessArgs("/bin/sh"))))!;
        node["process"]!["rlimits"]![0]!["type"] = "nofile";
        Assert.NotEmpty(RuntimeSpecSchema.Errors(node.ToJsonString()));

        node = JsonNode.Parse(Specs.ToJson(Specs.Generate(WithProcessArgs("/bin/sh"))))!;
        node["process"]!.AsObject().Remove("cwd");
        Assert.NotEmpty(RuntimeSpecSchema.Errors(node.ToJsonString()));
    }

    [Fact]
    public void SchemaReachesIntoLinuxDefinitions()
    {
        var node = JsonNode.Parse(Specs.ToJson(Specs.Generate(WithProcessArgs("/bin/sh"))))!;
        node["linux"]!["seccomp"]!["architectures"]!.AsArray().Add("SCMP_ARCH_BOGUS");
        node["process"]!["user"]!["uid"] = -1;
        var errors = RuntimeSpecSchema.Errors(node.ToJsonString());
        Assert.Contains(errors, e => e.Contains("/linux/seccomp/architectures", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("/process/user/uid", StringComparison.Ordinal));
    }
}
