using KataAgent.BackendAi.Kernels;
using KataAgent.Core;
using KataAgent.Testing;

namespace KataAgent.BackendAi.Tests.Kernels;

/// <summary>
/// A real agent (private containerd, own bridge 10.217.X.0/24, ports 30300-30699, the python image imported) with the
/// Backend.AI methods and <see cref="KernelEvents"/> over it, sessions on <see cref="RuntimeClass"/> through the
/// methods' runtime-class setting.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "xunit disposes it through IAsyncLifetime.DisposeAsync")]
public abstract class KernelsAgentFixture(string runtimeClass) : IAsyncLifetime
{
    private static readonly TestNetworkPlan Plan = new("kbk", SubnetOctet: 217, PortBase: 28300, PortsPerIndex: 20, FirstIndex: 100, IndexCount: 20);

    private readonly TestAgentHost _host = new("kbk", Plan);
    private BackendAiAgentMethods? _methods;
    private KernelEvents? _kernelEvents;

    public string RuntimeClass { get; } = runtimeClass;
    public Agent Agent => _host.Agent;
    public string ImageName => _host.ImageName;
    public RecordingEventProducer Events { get; } = new();
    public BackendAiAgentMethods Methods => _methods ?? throw new InvalidOperationException("not started");

    public async Task InitializeAsync()
    {
        await _host.StartAsync(_host.CommonOptions("ba-test-agent", "kata-agent-test") with
        {
            ReconcileInterval = TimeSpan.Zero,
            Resources = new ResourceOptions { TotalCpus = 64, DefaultCpus = 0.5, DefaultMemoryBytes = 512L << 20 },
        });
        var terminations = new KernelTerminations();
        _methods = new BackendAiAgentMethods(Agent, Events, new BackendAiAgentOptions
        {
            ScalingGroup = "default",
            AgentAddress = "tcp://127.0.0.1:6001",
            RuntimeClassByScalingGroup = new Dictionary<string, string> { ["default"] = RuntimeClass },
        }, terminations);
        _kernelEvents = new KernelEvents(Agent, Events, terminations);
        _kernelEvents.Start();
    }

    public async Task DisposeAsync()
    {
        if (_kernelEvents is not null)
            await _kernelEvents.DisposeAsync();
        if (_methods is not null)
            await _methods.DisposeAsync();
        await _host.DisposeAsync();
    }
}

public sealed class RuncKernelsAgentFixture() : KernelsAgentFixture("runc");

public sealed class GvisorKernelsAgentFixture() : KernelsAgentFixture("gvisor");
