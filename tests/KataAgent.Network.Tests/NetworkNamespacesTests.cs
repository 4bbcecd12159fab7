using System.Net;
using System.Net.Sockets;

namespace KataAgent.Network.Tests;

/// <summary>Native netns create/enter/delete, checked against the kernel's view and iproute2's.</summary>
public sealed class NetworkNamespacesTests : IAsyncLifetime
{
    private const string Prefix = "ktn-ns-";
    private readonly NetworkNamespaces _namespaces = new();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        if (Environment.IsPrivilegedProcess)
        {
            foreach (string name in _namespaces.List().Where(n => n.StartsWith(Prefix, StringComparison.Ordinal)))
                _namespaces.Delete(name);
        }
        return Task.CompletedTask;
    }

    private static string NewName() => Prefix + Guid.NewGuid().ToString("N")[..10];

    private static string OwnNamespace() => new FileInfo("/proc/thread-self/ns/net").LinkTarget!;

    [SkippableFact]
    public async Task Create_makes_a_persistent_namespace_with_only_loopback_up_and_delete_removes_it()
    {
        Host.RequireRoot();
        string name = NewName();
        string path = await _namespaces.CreateAsync(name);

        Assert.Equal(Path.Combine("/var/run/netns", name), path);
        Assert.True(_namespaces.Exists(name));
        Assert.Contains(name, _namespaces.List());
        string hostNamespace = new FileInfo("/proc/self/ns/net").LinkTarget!;
        string inside = await _namespaces.RunInsideAsync(name, OwnNamespace);
        Assert.NotEqual(hostNamespace, inside);
        // The awaiting code is back in the host namespace (the switch happened on a dedicated thread).
        Assert.Equal(hostNamespace, OwnNamespace());

        var stats = await _namespaces.GetInterfaceStatisticsAsync(name);
        Assert.Equal(["lo"], stats.Keys);

        // iproute2 sees it and finds lo up, as a runtime spawning into it would.
        var list = await Host.RunAsync("ip", "netns", "list");
        Assert.Contains(name, list.Stdout);
        var link = await Host.RunAsync("ip", "netns", "exec", name, "ip", "-o", "link", "show", "lo");
        Assert.Equal(0, link.Exit);
        Assert.Contains("UP", link.Stdout);

        Assert.True(_namespaces.Delete(name));
        Assert.False(File.Exists(path));
        Assert.False(_namespaces.Delete(name));
        Assert.DoesNotContain(name, (await Host.RunAsync("ip", "netns", "list")).Stdout);
    }

    [SkippableFact]
    public async Task The_run_directory_is_a_shared_mount_like_ip_netns_makes_it()
    {
        Host.RequireRoot();
        string name = NewName();
        await _namespaces.CreateAsync(name);
        string mountInfo = await File.ReadAllTextAsync("/proc/self/mountinfo");
        var runDirectory = mountInfo.Split('\n').Where(l => l.Split(' ').ElementAtOrDefault(4) is "/run/netns" or "/var/run/netns").ToList();
        Assert.NotEmpty(runDirectory);
        Assert.Contains("shared:", runDirectory[0]);
        // The namespace itself is an nsfs bind mount on its file.
        Assert.Contains(mountInfo.Split('\n'), l => l.Contains($"/netns/{name} ", StringComparison.Ordinal) && l.Contains("nsfs", StringComparison.Ordinal));
    }

    [SkippableFact]
    public async Task A_socket_opened_inside_stays_inside()
    {
        Host.RequireRoot();
        string name = NewName();
        await _namespaces.CreateAsync(name);
        using var listener = await _namespaces.RunInsideAsync(name, () =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            socket.Listen(1);
            return socket;
        });
        int port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var accepted = listener.AcceptAsync();

        // From inside (loopback is up there) the listener answers ...
        using var insideClient = await _namespaces.RunInsideAsync(name, () =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Connect(IPAddress.Loopback, port);
            return socket;
        });
        using var connection = await accepted.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(insideClient.Connected);

        // ... and the host's 127.0.0.1 is a different loopback (unless something of the host happens to use the port).
        if (HostPortPool.IsTcpPortFree(port))
        {
            using var hostClient = new TcpClient();
            await Assert.ThrowsAnyAsync<SocketException>(() => hostClient.ConnectAsync(IPAddress.Loopback, port));
        }
        var stats = await _namespaces.GetInterfaceStatisticsAsync(name, "lo");
        Assert.True(stats.RxPackets > 0 && stats.TxBytes > 0);
    }

    [SkippableFact]
    public async Task Errors_name_the_namespace()
    {
        Host.RequireRoot();
        string name = NewName();
        await _namespaces.CreateAsync(name);
        var exists = await Assert.ThrowsAsync<NetworkNamespaceException>(() => _namespaces.CreateAsync(name));
        Assert.Contains(name, exists.Message);
        Assert.Contains("already exists", exists.Message);
        Assert.True(_namespaces.Exists(name)); // the failed create did not remove the existing one

        var missing = await Assert.ThrowsAsync<NetworkNamespaceException>(() => _namespaces.RunInsideAsync(NewName(), () => 1));
        Assert.Contains("does not exist", missing.Message);
        var noInterface = await Assert.ThrowsAsync<NetworkNamespaceException>(() => _namespaces.GetInterfaceStatisticsAsync(name, "eth0"));
        Assert.Contains("eth0", noInterface.Message);

        // A plain file in the run directory is not a namespace: entering it fails clearly, delete removes it.
        string fake = NewName();
        await File.WriteAllTextAsync(Path.Combine(_namespaces.RunDirectory, fake), "");
        var notNetns = await Assert.ThrowsAsync<NetworkNamespaceException>(() => _namespaces.RunInsideAsync(fake, () => 1));
        Assert.Contains("setns", notNetns.Message);
        Assert.True(_namespaces.Delete(fake));

        var thrown = await Assert.ThrowsAsync<InvalidOperationException>(() => _namespaces.RunInsideAsync<int>(name, () => throw new InvalidOperationException("from inside")));
        Assert.Equal("from inside", thrown.Message);
    }

    [Fact]
    public void Invalid_names_are_refused()
    {
        foreach (string bad in new[] { "", ".", "..", "a/b", "x\0y", new string('n', 256) })
            Assert.Throws<ArgumentException>(() => _namespaces.PathOf(bad));
        Assert.Throws<ArgumentException>(() => new NetworkNamespaces("relative/dir"));
    }

    [SkippableFact]
    public async Task Many_namespaces_can_be_created_concurrently()
    {
        Host.RequireRoot();
        var names = Enumerable.Range(0, 8).Select(_ => NewName()).ToList();
        await Task.WhenAll(names.Select(n => _namespaces.CreateAsync(n)));
        var identities = await Task.WhenAll(names.Select(n => _namespaces.RunInsideAsync(n, OwnNamespace)));
        Assert.Equal(names.Count, identities.Distinct().Count());
        foreach (string name in names)
            Assert.True(_namespaces.Delete(name));
    }
}
