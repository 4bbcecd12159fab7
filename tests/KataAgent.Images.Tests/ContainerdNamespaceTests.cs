using KataAgent.Containerd;
using KataAgent.Testing;

namespace KataAgent.Images.Tests;

/// <summary>Tests against the shared private containerd, each test in a namespace of its own and with a temp dir.</summary>
public abstract class ContainerdNamespaceTests(ContainerdFixture containerd, string namespacePrefix) : IAsyncLifetime, IDisposable
{
    protected ContainerdFixture Containerd { get; } = containerd;
    protected TempDir Dir { get; } = new();
    protected ContainerdClient Client { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        var ns = namespacePrefix + "-" + Guid.NewGuid().ToString("N")[..10];
        Client = Containerd.Client.WithNamespace(ns);
        await Client.Namespaces.EnsureAsync(ns);
    }

    public Task DisposeAsync()
    {
        Client.Dispose();
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        Dir.Dispose();
        GC.SuppressFinalize(this);
    }
}
