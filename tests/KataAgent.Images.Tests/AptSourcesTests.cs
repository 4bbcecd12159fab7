namespace KataAgent.Images.Tests;

public sealed class AptSourcesTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Deb822_SourcesAreParsed_DisabledAndSourceOnlyStanzasIgnored()
    {
        var text = """
            Types: deb
            # a comment
            URIs: http://mirror.example/debian/
            Suites: bookworm bookworm-updates
            Components: main contrib
            Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

            Types: deb-src
            URIs: http://src.example/debian
            Suites: bookworm

            Types: deb
            URIs: http://off.example/debian
            Suites: bookworm
            Enabled: no
            """;
        var source = Assert.Single(AptSources.ParseDeb822(text, "x.sources"));
        Assert.Equal("http://mirror.example/debian", source.Uri);
        Assert.Equal(["bookworm", "bookworm-updates"], source.Suites);
        Assert.Equal(["main", "contrib"], source.Components);
        Assert.Equal("/usr/share/keyrings/debian-archive-keyring.gpg", source.SignedBy);
    }

    [Fact]
    public void OneLine_SourcesAreParsed_WithOptions()
    {
        var text = """
            # deb http://commented.example/debian bookworm main
            deb-src http://src.example/debian bookworm main
            deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main
            deb http://security.example/debian-security bookworm-security main # trailing
            """;
        var sources = AptSources.ParseOneLine(text, "sources.list").ToList();
        Assert.Equal(2, sources.Count);
        Assert.Equal("http://mirror.example/debian", sources[0].Uri);
        Assert.Equal("/k.gpg", sources[0].SignedBy);
        Assert.Equal(["bookworm-security"], sources[1].Suites);
    }

    [Fact]
    public void FindMirror_PicksTheSourceServingTheSuiteItself_AndSkipsDisabledFiles()
    {
        var apt = _dir.Path;
        Directory.CreateDirectory(Path.Combine(apt, "sources.list.d"));
        File.WriteAllText(Path.Combine(apt, "sources.list"), "deb http://security.example/debian-security bookworm-security main\n");
        File.WriteAllText(Path.Combine(apt, "sources.list.d", "a.list.disabled"), "deb http://disabled.example/debian bookworm main\n");
        File.WriteAllText(Path.Combine(apt, "sources.list.d", "debian.sources"), "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n");

        Assert.Equal("http://mirror.example/debian", AptSources.FindMirror("bookworm", apt).Uri);
        var e = Assert.Throws<InvalidOperationException>(() => AptSources.FindMirror("trixie", apt));
        Assert.Contains("trixie", e.Message, StringComparison.Ordinal);
        Assert.Contains("mirror.example", e.Message, StringComparison.Ordinal);
    }
}
