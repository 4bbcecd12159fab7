using System.Text.Json;
using KataAgent.Core.Sessions;

namespace KataAgent.Core.Tests;

public sealed class ImageLabelsTests
{
    private static Dictionary<string, string> Labels(params (string Key, string Value)[] pairs) => pairs.ToDictionary(p => p.Key, p => p.Value);

    [Theory]
    [InlineData("1073741824", 1L << 30)]
    [InlineData("1g", 1L << 30)]
    [InlineData("1G", 1L << 30)]
    [InlineData("256m", 256L << 20)]
    [InlineData("256MiB", 256L << 20)]
    [InlineData("1.5g", 3L << 29)]
    [InlineData("64kb", 64L << 10)]
    [InlineData("2 GiB", 2L << 30)]
    [InlineData("1_024", 1024L)]
    [InlineData("512b", 512L)]
    public void Binary_sizes_read_as_backend_ai_writes_them(string text, long bytes) =>
        Assert.Equal(bytes, ImageLabels.ParseBinarySize(text));

    [Theory]
    [InlineData("")]
    [InlineData("g")]
    [InlineData("lots")]
    [InlineData("1x")]
    [InlineData("-1g")]
    [InlineData("1.5")]
    public void Bad_sizes_are_not_sizes(string text) => Assert.Null(ImageLabels.ParseBinarySize(text));

    [Fact]
    public void Minimums_read_cpu_and_mem_and_ignore_accelerators()
    {
        var minimums = ImageLabels.ParseMinimums(Labels(("ai.backend.resource.min.cpu", "0.5"), ("ai.backend.resource.min.mem", "256m"),
            ("ai.backend.resource.min.cuda.device", "1"), ("ai.backend.resource.min.cuda.shares", "0.1")));
        Assert.Equal(new ResourceMinimums(0.5, 256L << 20), minimums);
        Assert.Equal(new ResourceMinimums(null, null), ImageLabels.ParseMinimums(Labels()));
        var cpu = Assert.Throws<FormatException>(() => ImageLabels.ParseMinimums(Labels(("ai.backend.resource.min.cpu", "two"))));
        Assert.Equal("ai.backend.resource.min.cpu: 'two' is not a number of cores", cpu.Message);
        var mem = Assert.Throws<FormatException>(() => ImageLabels.ParseMinimums(Labels(("ai.backend.resource.min.mem", "1q"))));
        Assert.StartsWith("ai.backend.resource.min.mem: '1q' is not a size", mem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Core_count_variables_get_the_rounded_up_share_unless_requested()
    {
        var env = ImageLabels.Environment(new Dictionary<string, string> { ["B"] = "own" }, Labels(("ai.backend.envs.corecount", "A, B,,C")), 2.2);
        Assert.Equal(new Dictionary<string, string> { ["A"] = "3", ["B"] = "own", ["C"] = "3" }, env);
        Assert.Equal("1", ImageLabels.Environment(new Dictionary<string, string>(), Labels(("ai.backend.envs.corecount", "N")), 0.25)["N"]);
        Assert.Empty(ImageLabels.Environment(new Dictionary<string, string>(), Labels(), 4));
    }

    [Fact]
    public void Features_are_words_or_null_when_undeclared()
    {
        Assert.Equal(["query", "batch", "uid-match"], ImageLabels.ParseFeatures(Labels(("ai.backend.features", " query batch  uid-match query")))!);
        Assert.Null(ImageLabels.ParseFeatures(Labels()));
    }

    [Theory]
    [InlineData("python3 -m ai.backend.kernel python /usr/bin/python3", new[] { "python3", "-m", "ai.backend.kernel", "python", "/usr/bin/python3" })]
    [InlineData("""["/opt/kernel/entrypoint.sh", "a b"]""", new[] { "/opt/kernel/entrypoint.sh", "a b" })]
    [InlineData("""sh -c 'echo "hi there"' "x\"y" a\ b""", new[] { "sh", "-c", "echo \"hi there\"", "x\"y", "a b" })]
    public void Runner_command_label_is_a_json_array_or_a_command_line(string label, string[] argv) =>
        Assert.Equal(argv, ImageLabels.ParseRunnerCommand(Labels((ImageLabels.RunnerCommand, label)))!);

    [Theory]
    [InlineData("", "the runner command is empty")]
    [InlineData("[]", "the runner command is empty")]
    [InlineData("""["python3", 1]""", "not a JSON array of strings")]
    [InlineData("python3 'unterminated", "unterminated ' quote")]
    public void Bad_runner_command_labels_are_named(string label, string problem)
    {
        var e = Assert.Throws<FormatException>(() => ImageLabels.ParseRunnerCommand(Labels((ImageLabels.RunnerCommand, label))));
        Assert.StartsWith(ImageLabels.RunnerCommand + ": ", e.Message, StringComparison.Ordinal);
        Assert.Contains(problem, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Runner_commands_need_a_program_and_no_nul()
    {
        Assert.Null(ImageLabels.CheckCommand(["python3"]));
        Assert.Equal("the runner command is empty (it needs at least the program)", ImageLabels.CheckCommand([" "]));
        Assert.Equal("argument 2 of the runner command contains a NUL", ImageLabels.CheckCommand(["a", "b", "c\0"]));
        Assert.Null(ImageLabels.ParseRunnerCommand(Labels()));
    }
}

public sealed class ServiceAppsTests
{
    private static readonly IReadOnlyList<SessionServicePort> Declared = ServiceApps.FromDefinitions(
    [
        new ServicePortDefinition("jupyter", "http", [8080]),
        new ServicePortDefinition("web", "preopen", [8090, 8091]),
    ]);

    private static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement.Clone();

    [Fact]
    public void Apps_merge_into_declared_ports_of_the_same_name_keeping_protocol_and_ports()
    {
        var merged = ServiceApps.Merge(Declared, Json("""
            {"status": "done", "data": [
              {"name": "jupyter", "protocol": "tcp", "url_template": "http://{host}:{port}/tree", "allowed_arguments": ["--debug"], "allowed_envs": ["JUPYTER_TOKEN"]},
              {"name": "undeclared", "url_template": "http://{host}:{port}/"},
              {"name": "web"},
              {"url_template": "nameless"},
              42
            ]}
            """));
        Assert.Equal(2, merged.Count); // nothing published that was not declared
        var jupyter = merged[0];
        Assert.Equal(("jupyter", "http", 8080), (jupyter.Name, jupyter.Protocol, jupyter.ContainerPorts.Single()));
        Assert.Equal("http://{host}:{port}/tree", jupyter.UrlTemplate);
        Assert.Equal(["--debug"], jupyter.AllowedArguments);
        Assert.Equal(["JUPYTER_TOKEN"], jupyter.AllowedEnvs);
        Assert.Equal(Declared[1], merged[1]);
    }

    [Theory]
    [InlineData("""{"status": "failed", "data": [{"name": "jupyter", "url_template": "x"}]}""")]
    [InlineData("""{"status": "done"}""")]
    [InlineData("""{"status": "done", "data": {"name": "jupyter"}}""")]
    [InlineData("[]")]
    public void A_failed_or_malformed_answer_changes_nothing(string answer) =>
        Assert.Equal(Declared, ServiceApps.Merge(Declared, Json(answer)));
}
