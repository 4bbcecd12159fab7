using System.Security.Cryptography;
using System.Text;
using KataAgent.Testing;

namespace KataAgent.Containerd.Tests;

public sealed class ClientTests(ContainerdFixture fixture) : IClassFixture<ContainerdFixture>
{
    private ContainerdClient Client => fixture.Client;

    [Fact]
    public async Task Version_reports_the_running_containerd()
    {
        var version = await Client.Version.GetAsync();
        Assert.StartsWith("1.", version.Version.TrimStart('v'), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Introspection_lists_the_plugins_the_agent_needs()
    {
        var plugins = await Client.Introspection.PluginsAsync();
        Assert.Contains(plugins, p => p.Type == "io.containerd.snapshotter.v1" && p.Id == "overlayfs" && p.Ok);
        Assert.Contains(plugins, p => p.Type == "io.containerd.runtime.v2" && p.Id == "task");
        Assert.Contains(plugins, p => p.Type == "io.containerd.differ.v1" && p.Id == "walking");
    }

    [Fact]
    public async Task Namespace_is_created_and_listed()
    {
        var ns = "ns-" + Guid.NewGuid().ToString("N")[..8];
        await Client.Namespaces.EnsureAsync(ns);
        await Client.Namespaces.EnsureAsync(ns);
        Assert.Contains(ns, await Client.Namespaces.ListAsync());
        await Client.Namespaces.DeleteAsync(ns);
        Assert.DoesNotContain(ns, await Client.Namespaces.ListAsync());
    }

    [Fact]
    public async Task Missing_container_is_a_not_found_error_carrying_containerds_message()
    {
        var e = await Assert.ThrowsAsync<ContainerdNotFoundException>(() => Client.Containers.GetAsync("no-such-container"));
        Assert.Contains("no-such-container", e.Message, StringComparison.Ordinal);
        Assert.Contains("not found", e.Detail, StringComparison.Ordinal);
        Assert.Null(await Client.Containers.FindAsync("no-such-container"));
    }

    [Fact]
    public async Task Duplicate_namespace_create_is_an_already_exists_error()
    {
        var ns = "dup-" + Guid.NewGuid().ToString("N")[..8];
        await Client.Namespaces.CreateAsync(ns);
        try
        {
            await Assert.ThrowsAsync<ContainerdAlreadyExistsException>(() => Client.Namespaces.CreateAsync(ns));
        }
        finally
        {
            await Client.Namespaces.DeleteAsync(ns);
        }
    }

    [Fact]
    public async Task Unreachable_socket_is_an_unavailable_error()
    {
        using var client = ContainerdClient.Connect("/tmp/no-such-dir-" + Guid.NewGuid().ToString("N")[..6] + "/c.sock");
        await Assert.ThrowsAsync<ContainerdUnavailableException>(() => client.Version.GetAsync());
    }

    [Fact]
    public async Task Content_round_trips_under_a_lease_and_a_resumed_write_completes()
    {
        var data = RandomNumberGenerator.GetBytes(3 * 1024 * 1024 + 17);
        var digest = "sha256:" + Convert.ToHexStringLower(SHA256.HashData(data));
        var lease = await Client.Leases.CreateAsync(expiresAfter: TimeSpan.FromHours(1));
        var leased = Client.WithLease(lease.Id);
        try
        {
            // A stream that dies after 1.5 MiB leaves a partial ingest behind.
            var reference = "test-" + Guid.NewGuid().ToString("N");
            await Assert.ThrowsAnyAsync<Exception>(() =>
                leased.Content.WriteAsync(reference, new FailingStream(data, failAfter: 1536 * 1024), data.Length, digest));
            var status = await leased.Content.StatusAsync(reference);
            Assert.NotNull(status);
            Assert.True(status!.Offset > 0, "the partial write should be kept");

            var written = await leased.Content.WriteAsync(reference, new MemoryStream(data), data.Length, digest);
            Assert.True(written);
            var info = await Client.Content.InfoAsync(digest);
            Assert.Equal(data.Length, info.Size);
            Assert.Equal(data, await Client.Content.ReadAllAsync(digest));

            // Writing the same blob again is a no-op.
            Assert.False(await leased.Content.WriteAsync("again-" + reference, new MemoryStream(data), data.Length, digest));
        }
        finally
        {
            await Client.Leases.DeleteAsync(lease.Id, sync: true);
        }
        // Nothing else holds the blob: the lease's deletion let GC take it.
        Assert.Null(await Client.Content.FindAsync(digest));
    }

    [Fact]
    public async Task Content_with_wrong_digest_is_refused()
    {
        var data = Encoding.UTF8.GetBytes("hello");
        var wrong = "sha256:" + new string('0', 64);
        var lease = await Client.Leases.CreateAsync(expiresAfter: TimeSpan.FromHours(1));
        try
        {
            var e = await Assert.ThrowsAnyAsync<ContainerdException>(() =>
                Client.WithLease(lease.Id).Content.WriteAsync("bad-" + Guid.NewGuid().ToString("N"), new MemoryStream(data), data.Length, wrong));
            Assert.Contains("digest", e.Message, StringComparison.OrdinalIgnoreCase);
            Assert.Null(await Client.Content.FindAsync(wrong));
        }
        finally
        {
            await Client.Leases.DeleteAsync(lease.Id, sync: true);
        }
    }

    private sealed class FailingStream(byte[] data, int failAfter) : MemoryStream(data)
    {
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (Position >= failAfter)
                throw new IOException("simulated source failure");
            var max = (int)Math.Min(buffer.Length, failAfter - Position);
            return await base.ReadAsync(buffer[..max], cancellationToken);
        }
    }
}
