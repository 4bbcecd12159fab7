using System.Text.Json.Nodes;
using KataAgent.Core.Commit;
using KataAgent.Core.Sessions;
using KataAgent.Images;
using Xunit.Abstractions;

namespace KataAgent.Core.Tests;

public sealed class RuncCommitFixture : AgentFixture;
public sealed class GvisorCommitFixture : AgentFixture;

/// <summary>Commit a session's filesystem to an image, and start new sessions from it — on runc and gVisor.</summary>
public abstract class CommitTestsBase(AgentFixture fixture, string runtime, ITestOutputHelper output)
{
    protected Agent Agent => fixture.Agent;

    private Task<Session> CreateAsync(string? image = null) =>
        Agent.CreateSessionAsync(new SessionRequest { Image = image ?? fixture.ImageName, RuntimeClass = runtime });

    private Task<string> RunAsync(Session session, string code) => SessionCode.RunAsync(Agent, session, code);

    private static string NewName(string what) => $"kata-agent-test/commit-{what}:{Guid.NewGuid().ToString("N")[..8]}";

    [Fact]
    public async Task A_committed_image_starts_sessions_that_see_the_changes()
    {
        var name = NewName("changes");
        var source = await CreateAsync();
        Session? child = null;
        try
        {
            await RunAsync(source, "import os\nos.makedirs('/opt/committed', exist_ok=True)\n" +
                "open('/opt/committed/hello.txt', 'w').write('written in the source session\\n')\n" +
                "os.remove('/etc/debian_version')\nstate = 'kept'");
            var phases = new List<CommitPhase>();
            Agent.Committer.OnPhase = (_, _) =>
            {
                phases.Add(Agent.GetCommitStatus(source.KernelId).Phase);
                return Task.CompletedTask;
            };
            CommittedImage committed;
            try
            {
                committed = await Agent.CommitAsync(source.KernelId, name);
            }
            finally
            {
                Agent.Committer.OnPhase = null;
            }
            output.WriteLine(System.Text.Json.JsonSerializer.Serialize(committed));

            // Queryable while it ran, done after; the source session was resumed and kept its state.
            Assert.Equal([CommitPhase.Preparing, CommitPhase.Pausing, CommitPhase.Diffing, CommitPhase.Writing], phases);
            var status = Agent.GetCommitStatus(source.KernelId);
            Assert.Equal(CommitPhase.Done, status.Phase);
            Assert.Equal(committed, status.Result);
            Assert.True(committed.PausedFor > TimeSpan.Zero);
            Assert.Equal(global::Containerd.V1.Types.Status.Running, (await Agent.Containerd.Tasks.GetAsync(source.Record.ContainerId)).Status);
            Assert.Equal("kept\n", await RunAsync(source, "print(state)"));

            // The image: the base's layers plus one, same runtime config, the commit label, unpacked.
            var baseImage = await Agent.Services.Images.InspectAsync(fixture.ImageName);
            var image = await Agent.Services.Images.InspectAsync(name);
            Assert.Equal(committed.ManifestDigest, image.Target.Digest);
            Assert.Equal([.. baseImage.DiffIds, committed.DiffId], image.DiffIds);
            Assert.Equal(MediaTypes.OciLayerGzip, image.Layers[^1].MediaType);
            Assert.True(image.Unpacked);
            Assert.Equal(committed.ChainId, image.ChainId);
            Assert.Equal(source.KernelId, image.Labels[SessionCommitter.CommittedFromLabel]);
            Assert.Equal(fixture.ImageName, image.Labels[SessionCommitter.CommittedFromImageLabel]);
            Assert.Equal(baseImage.Config.Config?.Env, image.Config.Config?.Env);
            Assert.Equal(baseImage.Config.Config?.Entrypoint, image.Config.Config?.Entrypoint);
            Assert.Equal(baseImage.Config.Config?.Cmd, image.Config.Config?.Cmd);
            Assert.All(baseImage.Labels, kv => Assert.Equal(kv.Value, image.Labels[kv.Key]));
            Assert.Equal((baseImage.Config.History?.Count ?? 0) + 1, image.Config.History?.Count);
            var config = await Agent.Containerd.Content.InfoAsync(image.ConfigDescriptor.Digest);
            Assert.Equal(committed.ChainId, config.Labels[GcLabels.SnapshotFor("overlayfs")]);
            Assert.Empty(await Agent.Containerd.Leases.ListAsync(default, $"labels.\"{SessionCommitter.LeaseLabel}\""));

            // A new session from it sees the file, and not the removed one.
            child = await CreateAsync(name);
            Assert.Equal("written in the source session\n|False\n",
                await RunAsync(child, "import os\nprint(open('/opt/committed/hello.txt').read(), end='|')\nprint(os.path.exists('/etc/debian_version'))"));
        }
        finally
        {
            if (child is not null)
                await Agent.DestroySessionAsync(child.KernelId);
            await Agent.DestroySessionAsync(source.KernelId);
            await DeleteImageAsync(name);
        }
    }

    [Fact]
    public async Task Committing_to_an_existing_name_fails_unless_replace()
    {
        var name = NewName("replace");
        var session = await CreateAsync();
        Session? child = null;
        try
        {
            await RunAsync(session, "open('/root/version.txt', 'w').write('1')");
            var first = await Agent.CommitAsync(session.KernelId, name);
            Assert.False(first.Replaced);

            await RunAsync(session, "open('/root/version.txt', 'w').write('2')");
            var refused = await Assert.ThrowsAsync<ImageExistsException>(() => Agent.CommitAsync(session.KernelId, name));
            Assert.Contains(name, refused.Message, StringComparison.Ordinal);
            Assert.Contains("replace", refused.Message, StringComparison.Ordinal);
            Assert.Equal(CommitPhase.Failed, Agent.GetCommitStatus(session.KernelId).Phase);
            Assert.Equal(first.ManifestDigest, (await Agent.Containerd.Images.GetAsync(name)).Target.Digest);
            // The base image name is taken too.
            await Assert.ThrowsAsync<ImageExistsException>(() => Agent.CommitAsync(session.KernelId, fixture.ImageName));

            var second = await Agent.CommitAsync(session.KernelId, name, replace: true);
            Assert.True(second.Replaced);
            Assert.NotEqual(first.ManifestDigest, second.ManifestDigest);
            Assert.Equal(second.ManifestDigest, (await Agent.Containerd.Images.GetAsync(name)).Target.Digest);

            child = await CreateAsync(name);
            Assert.Equal("2\n", await RunAsync(child, "print(open('/root/version.txt').read())"));
        }
        finally
        {
            if (child is not null)
                await Agent.DestroySessionAsync(child.KernelId);
            await Agent.DestroySessionAsync(session.KernelId);
            await DeleteImageAsync(name);
        }
    }

    [Theory]
    [InlineData("diffing")]
    [InlineData("config")]
    [InlineData("register")]
    public async Task A_failed_commit_registers_nothing_and_resumes_the_session(string step)
    {
        var name = NewName("fail-" + step);
        var session = await CreateAsync();
        try
        {
            await RunAsync(session, "open('/root/unique.txt', 'w').write('" + Guid.NewGuid() + "')");
            var snapshotsBefore = (await Agent.Containerd.Snapshots.ListAsync()).Select(s => s.Name).ToHashSet();
            Agent.Committer.FailBeforeStep = step;
            try
            {
                var e = await Assert.ThrowsAsync<ImageCommitException>(() => Agent.CommitAsync(session.KernelId, name));
                Assert.Contains(step, e.Message, StringComparison.Ordinal);
            }
            finally
            {
                Agent.Committer.FailBeforeStep = null;
            }

            var status = Agent.GetCommitStatus(session.KernelId);
            Assert.Equal(CommitPhase.Failed, status.Phase);
            Assert.NotNull(status.Error);
            Assert.Null(await Agent.Containerd.Images.FindAsync(name));
            Assert.Equal(global::Containerd.V1.Types.Status.Running, (await Agent.Containerd.Tasks.GetAsync(session.Record.ContainerId)).Status);
            Assert.Equal("ok\n", await RunAsync(session, "print('ok')"));
            Assert.Empty(await Agent.Containerd.Leases.ListAsync(default, $"labels.\"{SessionCommitter.LeaseLabel}\""));
            var snapshotsAfter = (await Agent.Containerd.Snapshots.ListAsync()).Select(s => s.Name).ToHashSet();
            Assert.Empty(snapshotsAfter.Except(snapshotsBefore));
            // No config of this session's commit survived the rollback's synchronous GC.
            foreach (var info in await Agent.Containerd.Content.ListAsync(default, $"labels.\"{GcLabels.SnapshotFor("overlayfs")}\""))
            {
                var text = System.Text.Encoding.UTF8.GetString(await Agent.Containerd.Content.ReadAllAsync(info.Digest));
                Assert.DoesNotContain(session.KernelId, text, StringComparison.Ordinal);
            }

            // And the next commit works.
            var committed = await Agent.CommitAsync(session.KernelId, name);
            Assert.Equal(CommitPhase.Done, Agent.GetCommitStatus(session.KernelId).Phase);
            Assert.NotNull(await Agent.Containerd.Images.FindAsync(committed.Name));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
            await DeleteImageAsync(name);
        }
    }

    [Fact]
    public async Task Bad_requests_fail_clearly()
    {
        await Assert.ThrowsAsync<SessionNotFoundException>(() => Agent.CommitAsync("no-such-session", NewName("none")));
        Assert.Equal(CommitPhase.Idle, Agent.GetCommitStatus("no-such-session").Phase);
        var session = await CreateAsync();
        try
        {
            await Assert.ThrowsAsync<ArgumentException>(() => Agent.CommitAsync(session.KernelId, "has space"));
            await Assert.ThrowsAsync<ArgumentException>(() => Agent.CommitAsync(session.KernelId, ""));
        }
        finally
        {
            await Agent.DestroySessionAsync(session.KernelId);
        }
    }

    private async Task DeleteImageAsync(string name)
    {
        if (await Agent.Containerd.Images.FindAsync(name) is not null)
            await Agent.Containerd.Images.DeleteAsync(name, sync: true);
    }
}

public sealed class RuncCommitTests(RuncCommitFixture fixture, ITestOutputHelper output)
    : CommitTestsBase(fixture, "runc", output), IClassFixture<RuncCommitFixture>;

public sealed class GvisorCommitTests(GvisorCommitFixture fixture, ITestOutputHelper output)
    : CommitTestsBase(fixture, "gvisor", output), IClassFixture<GvisorCommitFixture>;

/// <summary>The config a commit writes, without containers.</summary>
public sealed class CommitConfigTests
{
    [Fact]
    public void The_base_config_is_kept_field_for_field_and_extended()
    {
        const string baseConfig = """
            {"architecture":"amd64","os":"linux","created":"2020-01-01T00:00:00Z",
             "config":{"Env":["PATH=/usr/bin"],"Entrypoint":["/bin/sh"],"Labels":{"ai.backend.kernelspec":"1"},"Volumes":{"/data":{}},"ArgsEscaped":true},
             "rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]},
             "history":[{"created_by":"base"}],
             "x-unknown":{"kept":true}}
            """;
        var now = new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero);
        var diffId = "sha256:" + new string('b', 64);
        var bytes = SessionCommitter.BuildConfig(System.Text.Encoding.UTF8.GetBytes(baseConfig), diffId, "k1", "base:1", now);
        var json = JsonNode.Parse(bytes)!.AsObject();
        Assert.Equal("2026-11-28T12:00:00.0000000Z", (string?)json["created"]);
        Assert.Equal(2, json["rootfs"]!["diff_ids"]!.AsArray().Count);
        Assert.Equal(diffId, (string?)json["rootfs"]!["diff_ids"]![1]);
        Assert.Equal(2, json["history"]!.AsArray().Count);
        Assert.Equal("kata-agent commit of session k1", (string?)json["history"]![1]!["created_by"]);
        Assert.Equal("k1", (string?)json["config"]!["Labels"]![SessionCommitter.CommittedFromLabel]);
        Assert.Equal("1", (string?)json["config"]!["Labels"]!["ai.backend.kernelspec"]);
        Assert.True((bool)json["config"]!["ArgsEscaped"]!);
        Assert.NotNull(json["config"]!["Volumes"]!["/data"]);
        Assert.True((bool)json["x-unknown"]!["kept"]!);
        Assert.Equal("/bin/sh", (string?)json["config"]!["Entrypoint"]![0]);
    }

    [Fact]
    public void A_config_without_rootfs_history_or_labels_gets_them()
    {
        var bytes = SessionCommitter.BuildConfig("{\"os\":\"linux\"}"u8, "sha256:" + new string('c', 64), "k", "b", DateTimeOffset.UnixEpoch);
        var json = JsonNode.Parse(bytes)!.AsObject();
        Assert.Equal("layers", (string?)json["rootfs"]!["type"]);
        Assert.Single(json["rootfs"]!["diff_ids"]!.AsArray());
        Assert.Single(json["history"]!.AsArray());
        Assert.Equal("k", (string?)json["config"]!["Labels"]![SessionCommitter.CommittedFromLabel]);
    }
}
