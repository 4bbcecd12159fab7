using System.Text.Json.Nodes;
using static KataAgent.Oci.SpecOpts;

namespace KataAgent.Oci.Tests;

// Kata's agent before 3.32 rejects a spec with a time namespace: no path may produce one.
public class TimeNamespaceTests
{
    [Fact]
    public void DefaultAndFullSpecsHaveNoTimeNamespace()
    {
        foreach (var spec in new[] { Specs.Generate(WithProcessArgs("/bin/sh")), Specs.Generate(TestSpecs.Full()) })
        {
            Assert.DoesNotContain(spec.Linux!.Namespaces!, n => n.Type == "time");
            // Checked on the JSON too: "time" is also a syscall name, so not a plain substring test.
            var types = JsonNode.Parse(Specs.ToJson(spec))!["linux"]!["namespaces"]!.AsArray().Select(n => (string?)n!["type"]);
            Assert.DoesNotContain("time", types);
            Assert.Equal(["pid", "ipc", "uts", "mount", "network", "cgroup"], spec.Linux.Namespaces!.Select(n => n.Type).ToList());
        }
    }

    [Fact]
    public void WithNamespaceTimeIsRejected()
    {
        var ex = Assert.Throws<InvalidSpecException>(() => Specs.Generate(WithProcessArgs("/bin/sh"), WithNamespace("time")));
        Assert.Contains("'time' namespace", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("time")]
    [InlineData("Time")]
    [InlineData("TIME")]
    public void HandWrittenOptionAddingTimeIsRejected(string type)
    {
        SpecOpt sneaky = spec => spec.Linux!.Namespaces!.Add(new LinuxNamespace { Type = type, Path = "/proc/1/ns/time" });
        var ex = Assert.Throws<InvalidSpecException>(() => Specs.Generate(WithProcessArgs("/bin/sh"), sneaky));
        Assert.Contains(ex.Problems, p => p.Contains("time", StringComparison.Ordinal) && p.Contains("never", StringComparison.Ordinal));
    }

    [Fact]
    public void AddingTimeAfterGenerateIsCaughtAtSerialization()
    {
        var spec = Specs.Generate(WithProcessArgs("/bin/sh"));
        spec.Linux!.Namespaces!.Add(new LinuxNamespace { Type = NamespaceTypes.Time });
        Assert.Throws<InvalidSpecException>(() => Specs.ToJson(spec));
        Assert.Throws<InvalidSpecException>(() => Specs.ToUtf8Json(spec));
    }
}
