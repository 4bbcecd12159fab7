using KataAgent.Containerd;
using KataAgent.Containerd.Private;
using Xunit;

namespace KataAgent.Testing;

/// <summary>
/// A private containerd for one test class or collection: its own root, state and socket in a
/// short temp dir. On dispose it reaps whatever the tests left in it, stops it and removes the dir.
/// </summary>
public sealed class ContainerdFixture : IAsyncLifetime
{
    private PrivateContainerd? _containerd;

    public string Namespace { get; } = "kata-agent-test";
    public string RootDir { get; } = Path.Combine("/tmp", "kat-" + Guid.NewGuid().ToString("N")[..10]);

    public PrivateContainerd Containerd => _containerd ?? throw new InvalidOperationException("containerd fixture not started");
    public ContainerdClient Client { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        _containerd = await PrivateContainerd.StartAsync(new PrivateContainerdOptions(RootDir));
        Client = _containerd.CreateClient(Namespace);
        await Client.Namespaces.EnsureAsync(Namespace);
    }

    public async Task DisposeAsync()
    {
        if (_containerd is null)
            return;
        try
        {
            await Reaper.ReapNamespaceAsync(Client, CancellationToken.None);
        }
        finally
        {
            Client.Dispose();
            await _containerd.DisposeAsync();
            Mounts.UnmountAllUnder(RootDir);
            try
            {
                Directory.Delete(RootDir, recursive: true);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }
}
