using static KataAgent.Oci.ImageSpecOpts;
using static KataAgent.Oci.SpecOpts;

namespace KataAgent.Oci.Tests;

public class EnvAndArgsTests
{
    [Fact]
    public void MergeEnvReplacesInPlaceAppendsAndRemoves()
    {
        var merged = Specs.MergeEnv(["A=1", "B=2", "C=3"], ["B=20", "D=4", "C", "A=1=x"]);
        Assert.Equal(["A=1=x", "B=20", "D=4"], merged);
    }

    [Fact]
    public void MergeEnvRejectsEmptyName()
    {
        var ex = Assert.Throws<InvalidSpecException>(() => Specs.MergeEnv([], ["=oops"]));
        Assert.Contains("empty name", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void DefaultPathIsAddedOnlyWhenNobodySetsOne()
    {
        var plain = Specs.Generate(WithProcessArgs("/bin/sh"));
        Assert.Equal(["PATH=" + SpecDefaults.Path], plain.Process!.Env);

        var own = Specs.Generate(WithProcessArgs("/bin/sh"), WithEnv("PATH=/opt/bin"));
        Assert.Equal(["PATH=/opt/bin"], own.Process!.Env);
    }

    [Fact]
    public void ImageEnvIsTheBaseAndOptionsOverrideItWhateverTheirOrder()
    {
        var spec = Specs.Generate(
            WithEnv("LANG=en_US.UTF-8", "EARLY=1"),
            WithImageConfig(TestSpecs.PythonImage()),
            WithEnvVar("PYTHONUNBUFFERED", "0"),
            WithEnv("LATE=2"));

        Assert.Equal(
            ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=en_US.UTF-8", "PYTHONUNBUFFERED=0", "EARLY=1", "LATE=2"],
            spec.Process!.Env);
    }

    [Fact]
    public void EntrypointPlusCmdByDefault()
    {
        var spec = Specs.Generate(WithImageConfig(TestSpecs.PythonImage()));
        Assert.Equal(["/usr/bin/tini", "--", "python3"], spec.Process!.Args);
        Assert.Equal("/srv", spec.Process.Cwd);
    }

    [Fact]
    public void GivenArgsReplaceCmdButKeepEntrypoint()
    {
        var spec = Specs.Generate(WithImageConfig(TestSpecs.PythonImage(), ["python3", "-c", "print(1)"]));
        Assert.Equal(["/usr/bin/tini", "--", "python3", "-c", "print(1)"], spec.Process!.Args);

        var noArgs = Specs.Generate(WithImageConfig(TestSpecs.PythonImage(), []));
        Assert.Equal(["/usr/bin/tini", "--"], noArgs.Process!.Args);
    }

    [Fact]
    public void WithoutEntrypointArgsAreTheCommand()
    {
        var image = TestSpecs.PythonImage();
        image.Config!.Entrypoint = null;
        Assert.Equal(["python3"], Specs.Generate(WithImageConfig(image)).Process!.Args);
        Assert.Equal(["/bin/sh", "-c", "true"], Specs.Generate(WithImageConfig(image, ["/bin/sh", "-c", "true"])).Process!.Args);
    }

    [Fact]
    public void LaterProcessArgsWinOverTheImage()
    {
        var spec = Specs.Generate(WithImageConfig(TestSpecs.PythonImage()), WithProcessArgs("/opt/kernel/runner"), WithProcessCwd("/home/work"));
        Assert.Equal(["/opt/kernel/runner"], spec.Process!.Args);
        Assert.Equal("/home/work", spec.Process.Cwd);
    }

    [Fact]
    public void ImageWithoutAnyCommandIsAClearError()
    {
        var image = ImageConfig.Parse("""{"config":{"Env":["A=1"]}}""");
        var ex = Assert.Throws<InvalidSpecException>(() => Specs.Generate(WithImageConfig(image)));
        Assert.Contains("neither Entrypoint nor Cmd", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WorkingDirDefaultsToRootAndMustBeAbsolute()
    {
        var image = ImageConfig.Parse("""{"config":{"Cmd":["sh"]}}""");
        Assert.Equal("/", Specs.Generate(WithImageConfig(image)).Process!.Cwd);

        image.Config!.WorkingDir = "app";
        var ex = Assert.Throws<InvalidSpecException>(() => Specs.Generate(WithImageConfig(image)));
        Assert.Contains("WorkingDir 'app' is not absolute", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ImageUserIsApplied()
    {
        var image = ImageConfig.Parse("""{"config":{"Cmd":["sh"],"User":"1000:100"}}""");
        var user = Specs.Generate(WithImageConfig(image)).Process!.User;
        Assert.Equal((1000u, 100u), (user.Uid, user.Gid));
    }

    [Fact]
    public void ImageConfigParsesAllFieldsAndLabelsStayOutOfTheSpec()
    {
        var image = TestSpecs.PythonImage();
        Assert.Equal("amd64", image.Architecture);
        Assert.Equal("linux", image.Os);
        Assert.Equal(new DateTimeOffset(2024, 5, 1, 10, 0, 0, TimeSpan.Zero), image.Created);
        Assert.Equal(["sha256:aaaa", "sha256:bbbb"], image.Rootfs!.DiffIds);
        Assert.Equal("ADD rootfs.tar /", image.History![0].CreatedBy);
        Assert.Equal("SIGINT", image.Config!.StopSignal);
        Assert.Equal(["8888/tcp"], image.Config.ExposedPorts!.Keys);
        Assert.Equal("1", image.Labels["ai.backend.kernelspec"]);

        var spec = Specs.Generate(WithImageConfig(image));
        Assert.Empty(spec.Annotations!);
        Assert.DoesNotContain("kernelspec", Specs.ToJson(spec), StringComparison.Ordinal);
    }

    [Fact]
    public void ImageConfigRoundTripsWithItsOwnFieldNames()
    {
        var json = TestSpecs.PythonImage().ToJson();
        Assert.Contains("\"diff_ids\":", json, StringComparison.Ordinal);
        Assert.Contains("\"Entrypoint\":", json, StringComparison.Ordinal);
        Assert.Contains("\"created_by\":", json, StringComparison.Ordinal);
        Assert.Null(System.Text.Json.Nodes.JsonNode.Parse(json)!["Labels"]); // only config.Labels
        Assert.Equal(json, ImageConfig.Parse(json).ToJson());
    }

    [Fact]
    public void LabelsOfImageWithoutConfigAreEmpty()
    {
        Assert.Empty(ImageConfig.Parse("{}").Labels);
    }
}
