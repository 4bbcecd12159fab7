using KataAgent.Images.Registry;

namespace KataAgent.Images.Tests.Registry;

public sealed class ImageReferenceTests
{
    [Theory]
    [InlineData("python", "docker.io", "library/python", "latest", null, "docker.io/library/python:latest")]
    [InlineData("python:3.12-slim", "docker.io", "library/python", "3.12-slim", null, "docker.io/library/python:3.12-slim")]
    [InlineData("lablup/python:3", "docker.io", "lablup/python", "3", null, "docker.io/lablup/python:3")]
    [InlineData("docker.io/python", "docker.io", "library/python", "latest", null, "docker.io/library/python:latest")]
    [InlineData("index.docker.io/library/python:3", "docker.io", "library/python", "3", null, "docker.io/library/python:3")]
    [InlineData("127.0.0.1:5000/kata/python:3", "127.0.0.1:5000", "kata/python", "3", null, "127.0.0.1:5000/kata/python:3")]
    [InlineData("localhost/x", "localhost", "x", "latest", null, "localhost/x:latest")]
    [InlineData("localhost:5000/a/b/c", "localhost:5000", "a/b/c", "latest", null, "localhost:5000/a/b/c:latest")]
    [InlineData("ghcr.io/owner/img", "ghcr.io", "owner/img", "latest", null, "ghcr.io/owner/img:latest")]
    [InlineData("Registry.Example.COM:443/x", "registry.example.com:443", "x", "latest", null, "registry.example.com:443/x:latest")]
    [InlineData("[::1]:5000/x:1", "[::1]:5000", "x", "1", null, "[::1]:5000/x:1")]
    [InlineData("a__b/c-d.e_f---g", "docker.io", "a__b/c-d.e_f---g", "latest", null, "docker.io/a__b/c-d.e_f---g:latest")]
    public void Parses_AndNormalises(string text, string registry, string repository, string? tag, string? digest, string full)
    {
        var reference = ImageReference.Parse(text);
        Assert.Equal(registry, reference.Registry);
        Assert.Equal(repository, reference.Repository);
        Assert.Equal(tag, reference.Tag);
        Assert.Equal(digest, reference.Digest);
        Assert.Equal(full, reference.ToString());
        Assert.Equal(reference, ImageReference.Parse(reference.ToString()));
    }

    [Fact]
    public void Digest_WithAndWithoutTag()
    {
        var digest = "sha256:" + new string('a', 64);
        var pinned = ImageReference.Parse("python@" + digest);
        Assert.Null(pinned.Tag);
        Assert.Equal(digest, pinned.Digest);
        Assert.Equal(digest, pinned.ManifestReference);
        Assert.Equal("docker.io/library/python@" + digest, pinned.ToString());

        var both = ImageReference.Parse("127.0.0.1:5000/x:1@" + digest);
        Assert.Equal(("1", digest), (both.Tag, both.Digest));
        Assert.Equal(digest, both.ManifestReference);
        Assert.Equal("127.0.0.1:5000/x:1@" + digest, both.ToString());
        Assert.Equal("127.0.0.1:5000/x:2", both.WithTag("2").ToString());
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("  ", "empty")]
    [InlineData("python:", "':' is not followed by a tag")]
    [InlineData("python:-bad", "tag '-bad' is invalid")]
    [InlineData("python@", "'@' is not followed by a digest")]
    [InlineData("python@sha256:abc", "digest 'sha256:abc'")]
    [InlineData("python@md5:0123", "digest 'md5:0123'")]
    [InlineData("Python", "must be lowercase")]
    [InlineData("docker.io/Library/python", "must be lowercase")]
    [InlineData("a//b", "empty path component")]
    [InlineData("a/-b", "path component '-b' is invalid")]
    [InlineData("a/b.", "path component 'b.' is invalid")]
    [InlineData("127.0.0.1:99999/x", "port '99999'")]
    [InlineData("127.0.0.1:port/x", "port 'port'")]
    [InlineData("bad_host.com/x", "registry host 'bad_host.com'")]
    [InlineData("[::zz]:5000/x", "not a valid bracketed IPv6")]
    [InlineData("127.0.0.1:5000/", "has no repository name")]
    [InlineData("python 3", "whitespace")]
    public void Rejects_NamingWhatIsWrong(string text, string expected)
    {
        var error = Assert.Throws<ImageReferenceException>(() => ImageReference.Parse(text));
        Assert.Contains(expected, error.Message);
        Assert.False(ImageReference.TryParse(text, out _));
    }

    [Fact]
    public void Rejects_OverlongRepository()
    {
        var error = Assert.Throws<ImageReferenceException>(() => ImageReference.Parse("x/" + new string('a', 300)));
        Assert.Contains("more than 255", error.Message);
    }
}

public sealed class AuthChallengeTests
{
    [Fact]
    public void Bearer_WithQuotedParameters()
    {
        var challenge = Assert.Single(AuthChallenge.Parse("Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/python:pull,push\""));
        Assert.True(challenge.IsBearer);
        Assert.Equal("https://auth.docker.io/token", challenge.Realm);
        Assert.Equal("registry.docker.io", challenge.Service);
        Assert.Equal("repository:library/python:pull,push", challenge.Scope);
    }

    [Fact]
    public void SeveralChallenges_UnquotedValues_Escapes_AndErrors()
    {
        var challenges = AuthChallenge.Parse("Basic realm=\"a \\\"quoted\\\" realm\", Bearer realm=https://t/token, error=\"insufficient_scope\"");
        Assert.Equal(2, challenges.Count);
        Assert.True(challenges[0].IsBasic);
        Assert.Equal("a \"quoted\" realm", challenges[0].Realm);
        Assert.True(challenges[1].IsBearer);
        Assert.Equal("https://t/token", challenges[1].Realm);
        Assert.Equal("insufficient_scope", challenges[1].Error);
    }

    [Fact]
    public void SchemeOnly_AndToken68()
    {
        var challenges = AuthChallenge.Parse("Negotiate, Basic realm=\"r\", NTLM abc==");
        Assert.Equal(["Negotiate", "Basic", "NTLM"], challenges.Select(c => c.Scheme));
        Assert.Equal("r", challenges[1].Realm);
    }
}
