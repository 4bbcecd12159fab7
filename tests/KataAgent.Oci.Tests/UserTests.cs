using static KataAgent.Oci.SpecOpts;

namespace KataAgent.Oci.Tests;

public sealed class UserTests : IDisposable
{
    private readonly string _rootfs = Path.Combine(Path.GetTempPath(), "oci-user-" + Guid.NewGuid().ToString("N"));

    public UserTests()
    {
        Directory.CreateDirectory(Path.Combine(_rootfs, "etc"));
        File.WriteAllText(Path.Combine(_rootfs, "etc", "passwd"), """
            root:x:0:0:root:/root:/bin/bash
            # a comment
            daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
            work:x:1000:1000:Work:/home/work:/bin/bash
            svc:x:1001:100::/srv:/bin/false
            """);
        File.WriteAllText(Path.Combine(_rootfs, "etc", "group"), """
            root:x:0:
            sudo:x:27:work
            users:x:100:work,svc
            work:x:1000:
            video:x:44:svc
            """);
    }

    public void Dispose() => Directory.Delete(_rootfs, recursive: true);

    [Theory]
    [InlineData("", 0u, 0u)]
    [InlineData("0", 0u, 0u)]
    [InlineData("root", 0u, 0u)]
    [InlineData("root:root", 0u, 0u)]
    [InlineData("1000", 1000u, 0u)]
    [InlineData("1000:1000", 1000u, 1000u)]
    [InlineData("65534:65534", 65534u, 65534u)]
    public void NumericAndRootNeedNoRootfs(string user, uint uid, uint gid)
    {
        var resolved = UserResolver.Resolve(user);
        Assert.Equal((uid, gid), (resolved.Uid, resolved.Gid));
        Assert.Empty(resolved.AdditionalGids);
    }

    [Fact]
    public void NamesWithoutRootfsAreAClearError()
    {
        var ex = Assert.Throws<InvalidSpecException>(() => UserResolver.Resolve("work"));
        Assert.Contains("user name 'work'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("no rootfs path", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("a:b:c", "user[:group]")]
    [InlineData("1000:", "empty group")]
    [InlineData("-1", "outside 0..")]
    [InlineData("4294967296", "outside 0..")]
    [InlineData("0:-5", "group id '-5'")]
    public void MalformedUserStringsAreRejected(string user, string expected)
    {
        var ex = Assert.Throws<InvalidSpecException>(() => UserResolver.Resolve(user));
        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void NameResolvesThroughPasswdAndGroup()
    {
        var work = UserResolver.Resolve("work", _rootfs);
        Assert.Equal((1000u, 1000u), (work.Uid, work.Gid));
        Assert.Equal([27u, 100u], work.AdditionalGids);

        // The primary group is not repeated among the supplementary ones.
        var svc = UserResolver.Resolve("svc", _rootfs);
        Assert.Equal((1001u, 100u), (svc.Uid, svc.Gid));
        Assert.Equal([44u], svc.AdditionalGids);
    }

    [Fact]
    public void NumericUidTakesItsPrimaryGroupFromPasswd()
    {
        var resolved = UserResolver.Resolve("1001", _rootfs);
        Assert.Equal((1001u, 100u), (resolved.Uid, resolved.Gid));

        var unknown = UserResolver.Resolve("4242", _rootfs);
        Assert.Equal((4242u, 0u), (unknown.Uid, unknown.Gid));
    }

    [Fact]
    public void GroupByName()
    {
        var resolved = UserResolver.Resolve("work:video", _rootfs);
        Assert.Equal((1000u, 44u), (resolved.Uid, resolved.Gid));
        Assert.Equal((1u, 100u), (UserResolver.Resolve("daemon:users", _rootfs).Uid, UserResolver.Resolve("daemon:users", _rootfs).Gid));
    }

    [Fact]
    public void UnknownNamesAreAClearError()
    {
        var ex = Assert.Throws<InvalidSpecException>(() => UserResolver.Resolve("nobody", _rootfs));
        Assert.Contains("user 'nobody' not found in " + Path.Combine(_rootfs, "etc", "passwd"), ex.Message, StringComparison.Ordinal);

        ex = Assert.Throws<InvalidSpecException>(() => UserResolver.Resolve("work:wheel", _rootfs));
        Assert.Contains("group 'wheel' not found", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void SymlinkedPasswdIsNotFollowed()
    {
        var passwd = Path.Combine(_rootfs, "etc", "passwd");
        File.Delete(passwd);
        File.CreateSymbolicLink(passwd, "/etc/passwd");
        var ex = Assert.Throws<InvalidSpecException>(() => UserResolver.Resolve("root", _rootfs));
        Assert.Contains("symlink", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WithUserSetsSpecUser()
    {
        var spec = Specs.Generate(WithProcessArgs("/bin/sh"), WithUser("work", _rootfs));
        Assert.Equal(1000u, spec.Process!.User.Uid);
        Assert.Equal(1000u, spec.Process.User.Gid);
        Assert.Equal([27u, 100u], spec.Process.User.AdditionalGids);
        RuntimeSpecSchema.AssertValid(Specs.ToJson(spec));
    }

    [Fact]
    public void ImageUserNameResolvesWithRootfs()
    {
        var image = ImageConfig.Parse("""{"config":{"Cmd":["sh"],"User":"svc"}}""");
        var user = Specs.Generate(ImageSpecOpts.WithImageConfig(image, rootfsPath: _rootfs)).Process!.User;
        Assert.Equal((1001u, 100u), (user.Uid, user.Gid));
        Assert.Equal([44u], user.AdditionalGids);
    }
}
